"""Templates: ``templates/<name>.subject.txt``, ``<name>.txt`` and ``<name>.html``, each a ``string.Template``.

A placeholder is ``$name`` or ``${name}`` (``$$`` is a literal dollar). Every placeholder must be given a value
(a missing one raises ``TemplateError``); values are inserted as they are in the subject and the text part and
HTML-escaped in the HTML part.
"""

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).parent / "templates"
_NAME = re.compile(r"[a-z0-9_]{1,64}")


class TemplateError(ValueError):
    """The template does not exist, or the context misses one of its placeholders."""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


@lru_cache(maxsize=64)
def _load(directory: Path, name: str, suffix: str) -> Template:
    path = directory / f"{name}{suffix}"
    try:
        return Template(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"no template {path.name} in {directory}") from None


def _substitute(template: Template, context: Mapping[str, str], name: str) -> str:
    try:
        return template.substitute(context)
    except KeyError as exc:
        raise TemplateError(f"template {name!r} needs a value for {exc.args[0]!r}") from None
    except ValueError as exc:  # a stray "$" in the template itself
        raise TemplateError(f"template {name!r}: {exc}") from None


def render(template: str, context: Mapping[str, str], templates: Path = TEMPLATES) -> Rendered:
    if not _NAME.fullmatch(template):  # a name, never a path
        raise TemplateError(f"invalid template name {template!r}")
    values = {key: str(value) for key, value in context.items()}
    escaped = {key: html.escape(value) for key, value in values.items()}
    # One line: a header cannot hold a line break (and must not be given one by a value).
    subject = " ".join(_substitute(_load(templates, template, ".subject.txt"), values, template).split())
    return Rendered(
        subject=subject,
        text=_substitute(_load(templates, template, ".txt"), values, template),
        html=_substitute(_load(templates, template, ".html"), escaped, template),
    )
