"""The Celery side of Signalbox: the app, its queues and routing, the beat schedule, worker signals."""
