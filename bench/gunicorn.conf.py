"""The production gunicorn configuration the README recommends (and make bench measures).

Django views here are CPU-bound with short database round trips: one sync worker per
core plus one keeps both cores busy while a worker waits on PostgreSQL or Redis.
"""

import multiprocessing

bind = "127.0.0.1:8000"
workers = multiprocessing.cpu_count() + 1
worker_class = "sync"
backlog = 2048
keepalive = 5
timeout = 30
max_requests = 0
accesslog = None
preload_app = True
