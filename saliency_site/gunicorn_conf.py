"""gunicorn's settings for the site (``gunicorn -c python:saliency_site.gunicorn_conf``).

Threads, not one process per request: a client that connects and then stalls holds one thread
of ``WEB_THREADS`` in one of ``WEB_CONCURRENCY`` processes, not a whole worker, and its body
read is cut off after ``REQUEST_BODY_READ_TIMEOUT`` (saliency_site/middleware.py), while
oversized claims are refused at once. The web process does no model work (workers do), so
threads spend their time waiting on the database and the network, where Python threads are
cheap. The request line and headers are bounded so a client cannot send them without end.
"""
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
# The worker's heartbeat: a process whose main loop is stuck this long is restarted.
timeout = int(os.environ.get("WEB_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = "-"
