from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('explain', '0003_job_worker_heartbeat'),
    ]

    operations = [
        migrations.AddField(
            model_name='classifiermodel',
            name='method_support',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='classifiermodel',
            name='weights_fetch',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
