"""The one URL map of the feeds app (included at the site's root by mpfeed_site/urls.py), grouped by area;
the views live in feeds/views/, one module per area."""

from django.urls import path

from feeds.views import connect, jobs, mappings, runs, sent, staff, system

app_name = "feeds"
urlpatterns = [
    # The system: probes, the icon, health and metrics, the push inbox (machine-facing, no staff login).
    path("healthz", system.healthz, name="healthz"),
    path("favicon.ico", system.favicon, name="favicon"),
    path("health", system.health, name="health"),
    path("metrics", system.metrics, name="metrics"),
    path("inbox/<uuid:inbox_id>/", system.inbox, name="inbox"),
    # Staff pages: the workspaces, their credential links, runs on demand, promotion, held credentials.
    path("", staff.home, name="home"),
    path("workspaces/new/", staff.workspace_new, name="workspace_new"),
    path("workspaces/<slug:slug>/", staff.workspace, name="workspace"),
    path("workspaces/<slug:slug>/links/", staff.link_issue, name="link_issue"),
    path("workspaces/<slug:slug>/links/<int:link_id>/revoke/", staff.link_revoke, name="link_revoke"),
    path("workspaces/<slug:slug>/jobs/<int:job_id>/run/", staff.job_run, name="job_run"),
    path("workspaces/<slug:slug>/promote/", staff.promote, name="promote"),
    path("workspaces/<slug:slug>/pause/", staff.workspace_pause, name="workspace_pause"),
    path("workspaces/<slug:slug>/resume/", staff.workspace_resume, name="workspace_resume"),
    path("workspaces/<slug:slug>/demote/", staff.demote, name="demote"),
    path("workspaces/<slug:slug>/alerts/", staff.workspace_alerts, name="workspace_alerts"),
    path("workspaces/<slug:slug>/embed-origins/", staff.workspace_embed, name="workspace_embed"),
    path("workspaces/<slug:slug>/credentials/confirm/", staff.credentials_confirm, name="credentials_confirm"),
    path("workspaces/<slug:slug>/credentials/discard/", staff.credentials_discard, name="credentials_discard"),
    # The client's credential page: the one-time link, then the same page by the session (no token in the URL).
    path("connect/", connect.connect, name="connect_page"),
    path("connect/embed/", connect.connect_embed, name="connect_embed_page"),
    path("connect/embed/<str:token>/", connect.connect_embed, name="connect_embed"),
    path("connect/<str:token>/", connect.connect, name="connect"),
    # Sync jobs: their source, schedule and push inbox token; a preview.
    path("workspaces/<slug:slug>/jobs/new/", jobs.job_new, name="job_new"),
    path("workspaces/<slug:slug>/jobs/<int:job_id>/", jobs.job_edit, name="job_edit"),
    path("workspaces/<slug:slug>/jobs/<int:job_id>/inbox-token/", jobs.job_inbox_token, name="job_inbox_token"),
    path("workspaces/<slug:slug>/jobs/<int:job_id>/preview/", jobs.job_preview, name="job_preview"),
    # Sync runs: their page, live status and lists, cancel, replay and CSV exports.
    path("runs/<int:run_id>/", runs.run, name="run"),
    path("runs/<int:run_id>/status.json", runs.run_status, name="run_status"),
    path("runs/<int:run_id>/lists/", runs.run_lists, name="run_lists"),
    path("runs/<int:run_id>/cancel/", runs.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/replay/", runs.run_replay, name="run_replay"),
    path("runs/<int:run_id>/deliveries.csv", runs.deliveries_csv, name="run_deliveries_csv"),
    path("runs/<int:run_id>/rejects.csv", runs.rejects_csv, name="run_rejects_csv"),
    # What was sent: batches found by a user's identity or an event's source_message_id, across runs.
    path("sent/", sent.sent_search, name="sent_search"),
    # Mappings: the editor and its live preview, the JSON export, the feed data sheet.
    path("workspaces/<slug:slug>/mappings/new/", mappings.mapping_new, name="mapping_new"),
    path("workspaces/<slug:slug>/mappings/preview", mappings.mapping_preview, name="mapping_preview"),
    path("workspaces/<slug:slug>/mappings/test-record", mappings.mapping_test_record, name="mapping_test_record"),
    path("workspaces/<slug:slug>/mappings/<int:mapping_id>/", mappings.mapping_edit, name="mapping_edit"),
    path(
        "workspaces/<slug:slug>/mappings/<int:mapping_id>/export.json", mappings.mapping_export, name="mapping_export"
    ),
    path("workspaces/<slug:slug>/mappings/<int:mapping_id>/datasheet/", mappings.datasheet, name="datasheet"),
    path(
        "workspaces/<slug:slug>/mappings/<int:mapping_id>/datasheet.md",
        mappings.datasheet_markdown,
        name="datasheet_md",
    ),
]
