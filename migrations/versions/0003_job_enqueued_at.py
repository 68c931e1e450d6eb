"""jobs.enqueued_at: when the run-job message reached the broker (NULL: not yet)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
    # finished and running rows were sent; queued ones are left NULL, so the sweep sends each of them
    # once more -- one stuck by the gap this column closes runs, a waiting one gets a harmless second
    # message (the claim runs a job once)
    op.execute("UPDATE jobs SET enqueued_at = created_at WHERE status <> 'queued'")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("enqueued_at")
