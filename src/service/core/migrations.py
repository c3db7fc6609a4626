"""Alembic configuration usable from any working directory, from a checkout or an installed wheel."""

from pathlib import Path

from alembic import command
from alembic.config import Config

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _script_location() -> Path:
    bundled = _PACKAGE_DIR / "migrations"  # the wheel carries the scripts (pyproject force-include)
    if (bundled / "env.py").exists():
        return bundled
    checkout = _PACKAGE_DIR.parent.parent / "alembic"  # src/service -> repository root
    if (checkout / "env.py").exists():
        return checkout
    raise RuntimeError("Alembic scripts not found: reinstall the service package")


def alembic_config(database_url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_script_location()))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["skip_logging_config"] = True
    if database_url:
        cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
