"""The Prefect server side: our server wrapper and its two routes (bulk submission, bulk
cancel), and the embedded local stack that runs it, with how clients find it."""
