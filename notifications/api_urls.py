from django.urls import path

from . import api

app_name = "notifications-api"

urlpatterns = [
    path("", api.notification_list, name="list"),
    path("read/", api.notification_read, name="read"),
    path("read-all/", api.notification_read_all, name="read-all"),
]
