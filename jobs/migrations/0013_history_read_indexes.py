"""Indexes for reads that do not grow with history (issue 15 §4): everyone's jobs newest first
(the staff job list and connect snapshot, the admin list), the same within a state, and an
owner's jobs in a state (the running count behind launch limits)."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0012_job_waiting_idx"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["-created_at", "-id"], name="job_created_idx"),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["state", "-created_at", "-id"], name="job_state_created_idx"),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["owner", "state", "kind"], name="job_owner_state_idx"),
        ),
    ]
