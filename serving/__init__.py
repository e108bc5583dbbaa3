"""Larder's lookup API: a Falcon WSGI app served by gunicorn, one process group per region."""
