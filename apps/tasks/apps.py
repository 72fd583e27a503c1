from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "apps.tasks"
    label = "tasks"

    def ready(self) -> None:
        from apps.core.conf import register_settings
        from apps.core.periodic import register_periodic_jobs
        from apps.observability.collectors import register_waiting_sources
        from apps.observability.dashboard import register_dashboard_figures
        from apps.tasks import operations
        from apps.tasks.conf import poll_retry_after_seconds, tasks_settings

        register_periodic_jobs(operations.PERIODIC_JOBS)
        register_settings(tasks_settings, poll_retry_after_seconds)
        register_waiting_sources(operations.WAITING_SOURCES)
        register_dashboard_figures("intents", operations.intents_today, order=20)
        register_dashboard_figures("dead_letters", operations.dead_letters_today, order=30)
        register_dashboard_figures("tasks", operations.in_progress, order=10)
