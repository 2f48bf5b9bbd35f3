"""Views, one module per area; their URLs are all in feeds/urls.py (the feeds app's one URL map)."""
