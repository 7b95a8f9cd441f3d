"""Getting reports to people: each finished run's email (mailjob.py queues what message.py
builds, outbox.py keeps and sends it through smtp.py), and the read-only HTTP server
(serve.py)."""
