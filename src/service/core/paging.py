"""The paging parameters every list endpoint shares: ``limit`` 1-100 (B2: 100 is ours) and ``offset`` >= 0."""

from typing import Annotated

from fastapi import Query

Limit = Annotated[int, Query(ge=1, le=100, description="Page size (1-100).")]
Offset = Annotated[int, Query(ge=0, description="Items to skip.")]
