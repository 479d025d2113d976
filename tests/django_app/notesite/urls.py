from django.urls import include, path

urlpatterns = [path("rohrpost/", include("rohrpost_bridge.urls"))]
