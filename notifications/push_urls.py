from django.urls import path

from . import push_api

app_name = "push-api"

urlpatterns = [
    path("vapid-public-key/", push_api.vapid_public_key, name="vapid-public-key"),
    path("subscriptions/", push_api.subscription_collection, name="subscriptions"),
    path("subscriptions/delete/", push_api.subscription_delete, name="subscription-delete"),
]
