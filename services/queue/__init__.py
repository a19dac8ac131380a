"""Jobs on the queue: the Celery app, job and batch records in Redis, submission, leases, recovery, outages."""
