"""counters: maintained totals (articles, per tag, per author, per favoriting user, favorites per article)

Also copies each article's created_at into article_tags, so one index walks a tag's articles in listing order.
Existing rows are counted here; from now on the service keeps every counter (service/articles/counters.py).

Revision ID: 5d0c4a1e7b21
Revises: 2cb6d5260be7
Create Date: 2026-12-02 08:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d0c4a1e7b21"
down_revision: str | Sequence[str] | None = "2cb6d5260be7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTED = (
    ("tags", "articles_count"),
    ("articles", "favorites_count"),
    ("users", "articles_count"),
    ("users", "favorited_count"),
)

# Backfill: one statement per counter, correlated subqueries that both dialects run.
BACKFILL = (
    "INSERT INTO counters (name, value) SELECT 'articles', count(*) FROM articles",
    "UPDATE tags SET articles_count = (SELECT count(*) FROM article_tags WHERE article_tags.tag_id = tags.id)",
    "UPDATE articles SET favorites_count = (SELECT count(*) FROM favorites WHERE favorites.article_id = articles.id)",
    "UPDATE users SET articles_count = (SELECT count(*) FROM articles WHERE articles.author_id = users.id), "
    "favorited_count = (SELECT count(*) FROM favorites WHERE favorites.user_id = users.id)",
    "UPDATE article_tags SET article_created_at = "
    "(SELECT articles.created_at FROM articles WHERE articles.id = article_tags.article_id)",
)


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_counters")),
    )
    # Plain ADD/DROP COLUMN, never a batch copy: SQLite cannot reflect the users table's lower(...) unique indexes,
    # so copying that table would silently drop them.
    for table, column in COUNTED:
        op.add_column(table, sa.Column(column, sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("article_tags") as batch_op:
        batch_op.add_column(sa.Column("article_created_at", sa.DateTime(timezone=True), nullable=True))
    for statement in BACKFILL:
        op.execute(statement)
    with op.batch_alter_table("article_tags") as batch_op:
        batch_op.alter_column("article_created_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.drop_index("ix_article_tags_tag_id_article_id")
        batch_op.create_index(
            "ix_article_tags_tag_id_article_created_at_article_id",
            ["tag_id", "article_created_at", "article_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("article_tags") as batch_op:
        batch_op.drop_index("ix_article_tags_tag_id_article_created_at_article_id")
        batch_op.create_index("ix_article_tags_tag_id_article_id", ["tag_id", "article_id"], unique=False)
        batch_op.drop_column("article_created_at")
    for table, column in reversed(COUNTED):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # SQLite 3.35+ and PostgreSQL alike
    op.drop_table("counters")
