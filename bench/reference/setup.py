"""The reference for bench/run.sh --with-reference: Django + django-private-storage (PyPI) under
gunicorn, serving the bench files from PRIVATE_STORAGE_ROOT to a logged-in session.

  python reference/setup.py <work> <files-root>   prints the session cookie (sessionid=...)
"""
import os
import subprocess
import sys

SETTINGS = '''
SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions", "private_storage"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware", "django.contrib.auth.middleware.AuthenticationMiddleware"]
ROOT_URLCONF = "refsite.urls"
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}}}}}
PRIVATE_STORAGE_ROOT = {root!r}
PRIVATE_STORAGE_AUTH_FUNCTION = "private_storage.permissions.allow_authenticated"
USE_TZ = True
'''

URLS = '''
from django.urls import include, path
urlpatterns = [path("private-media/", include("private_storage.urls"))]
'''

SESSION = '''
import django
django.setup()
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
user = User.objects.create_user("bench", password="bench password")
session = SessionStore()
session["_auth_user_id"] = str(user.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = user.get_session_auth_hash()
session.create()
print("sessionid=" + session.session_key)
'''


def main():
    work, root = sys.argv[1], sys.argv[2]
    site = os.path.join(work, "refsite")
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, "__init__.py"), "w"):
        pass
    with open(os.path.join(site, "settings.py"), "w") as f:
        f.write(SETTINGS.format(db=os.path.join(work, "ref.sqlite3"), root=root))
    with open(os.path.join(site, "urls.py"), "w") as f:
        f.write(URLS)
    with open(os.path.join(site, "wsgi.py"), "w") as f:
        f.write("from django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="refsite.settings", PYTHONPATH=work)
    python = sys.executable
    subprocess.run([python, "-m", "django", "migrate", "-v", "0"], env=env, check=True)
    out = subprocess.run([python, "-c", SESSION], env=env, check=True, capture_output=True, text=True).stdout
    print(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
