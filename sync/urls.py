from django.urls import path

from sync.http import views

urlpatterns = [
    path("poll", views.PollView.as_view(), name="sync-poll"),
    path("send", views.SendView.as_view(), name="sync-send"),
    path("status", views.StatusView.as_view(), name="sync-status"),
    path("broadcast", views.BroadcastView.as_view(), name="sync-broadcast"),
]
