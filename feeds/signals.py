"""A job's schedule follows the job: saved, it is kept in step; deleted, it goes."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from feeds import tasks
from feeds.models import SyncJob


@receiver(post_save, sender=SyncJob)
def keep_schedule_in_step(sender, instance: SyncJob, **kwargs) -> None:
    tasks.keep_schedule(instance)


@receiver(post_delete, sender=SyncJob)
def drop_schedule(sender, instance: SyncJob, **kwargs) -> None:
    tasks.drop_schedule(instance.pk)
