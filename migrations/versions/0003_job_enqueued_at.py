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
    # rows from before this revision were sent when they were created (or failed with the broker
    # down): mark them sent, so the sweep does not queue a second message for every waiting job
    op.execute("UPDATE jobs SET enqueued_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("enqueued_at")
