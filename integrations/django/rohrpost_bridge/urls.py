"""`path("rohrpost/", include("rohrpost_bridge.urls"))`: the proxy's `url`
is the root, its hooks `connect/` and `disconnect/`, and the subscriptions
plugin's backend authorization `subscribe/`."""

from django.urls import path

from . import views

app_name = "rohrpost_bridge"

urlpatterns = [
    path("", views.handle, name="handle"),
    path("connect/", views.connect, name="connect"),
    path("disconnect/", views.disconnect, name="disconnect"),
    path("subscribe/", views.subscribe, name="subscribe"),
]
