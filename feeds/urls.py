from feeds.views import connect, jobs, mappings, runs, staff, system

app_name = "feeds"
urlpatterns = [
    *system.urlpatterns,
    *staff.urlpatterns,
    *connect.urlpatterns,
    *jobs.urlpatterns,
    *runs.urlpatterns,
    *mappings.urlpatterns,
]
