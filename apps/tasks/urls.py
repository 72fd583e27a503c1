from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from apps.tasks import api

router = SimpleRouter()
router.register("tasks", api.TaskExecutionViewSet, basename="task")
router.register("schedules", api.ScheduleViewSet, basename="schedule")

urlpatterns: list[URLPattern | URLResolver] = [
    path("task-types/", api.TaskTypeListView.as_view(), name="task-types"),
    *router.urls,
]
