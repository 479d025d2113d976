from django.db import models
from rohrpost.mixins import NotifyOnChange


class Note(NotifyOnChange, models.Model):
    """Every create, update and delete is sent to the group `note-<pk>`."""

    title = models.CharField(max_length=200)
