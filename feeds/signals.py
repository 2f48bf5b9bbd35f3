from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from feeds.models import SyncJob


@receiver(post_save, sender=SyncJob)
def keep_schedule_in_step(sender, instance: SyncJob, **kwargs) -> None:
    from feeds.scheduling import sync_schedule

    sync_schedule(instance)


@receiver(post_delete, sender=SyncJob)
def drop_schedule(sender, instance: SyncJob, **kwargs) -> None:
    from django_q.models import Schedule

    from feeds.scheduling import SCHEDULE_NAME

    Schedule.objects.filter(name=SCHEDULE_NAME.format(instance.pk)).delete()
