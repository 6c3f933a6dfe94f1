"""Alembic environment: migrations run on the connection :func:`emotorch.recommend.db.connect` passes."""

from alembic import context

from emotorch.recommend.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
