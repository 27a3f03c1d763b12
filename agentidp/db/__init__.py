"""The PostgreSQL backend the application's connection uses (``ENGINE: agentidp.db``)."""
