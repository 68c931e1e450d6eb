"""Infrastructure shared by the API and the workers: settings, database, storage, queue, security."""
