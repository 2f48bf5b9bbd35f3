from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "mpfeed"
admin.site.site_title = "mpfeed"
admin.site.index_title = "Partner feed administration"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("partner_api.urls")),
    path("api-tokens/", include("partner_api.staff_urls")),
    path("", include("feeds.urls")),
]
