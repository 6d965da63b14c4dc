"""The unread count is exact: an index of exactly the unread rows (recounts under the counter's
lock cost what a user has unread), and every stored count set once from the rows, since writes
before this release could leave it wrong (admin deletes, concurrent mark read)."""

from django.db import migrations, models
from django.db.models import Count


def recount(apps, schema_editor):
    Notification = apps.get_model("notifications", "Notification")
    NotificationState = apps.get_model("notifications", "NotificationState")
    db = schema_editor.connection.alias
    unread = dict(
        Notification.objects.using(db)
        .filter(read_at__isnull=True)
        .order_by()
        .values_list("recipient_id")
        .annotate(n=Count("pk"))
    )
    NotificationState.objects.using(db).bulk_create(
        [NotificationState(user_id=uid) for uid in unread], ignore_conflicts=True, batch_size=500
    )
    has_unread = Notification.objects.using(db).filter(read_at__isnull=True).values("recipient_id")
    NotificationState.objects.using(db).exclude(user_id__in=has_unread).exclude(unread_count=0).update(
        unread_count=0
    )
    by_value: dict[int, list[int]] = {}
    for uid, n in unread.items():
        by_value.setdefault(n, []).append(uid)
    for n, uids in by_value.items():
        for start in range(0, len(uids), 500):
            NotificationState.objects.using(db).filter(user_id__in=uids[start : start + 500]).update(
                unread_count=n
            )


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0003_socket_credential"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(("read_at__isnull", True)),
                fields=["recipient"],
                name="notification_unread_idx",
            ),
        ),
        migrations.RunPython(recount, migrations.RunPython.noop),
    ]
