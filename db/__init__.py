"""State: batches, images and their progress events, in SQLite or PostgreSQL via SQLAlchemy 2."""
