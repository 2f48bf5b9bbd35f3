"""File sources read only below the source folder (MPFEED_SOURCE_ROOT), whatever made the job: globs, '..' and
symbolic links are resolved and each file is checked where the source is built, when listed and when opened."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from feeds import sync
from feeds.forms import SyncJobAdminForm
from feeds.models import RejectedRecord, SyncJob, SyncRun
from feeds.sources import SourceError
from feeds.sources.build import build_source, source_root
from feeds.sources.files import FileSource
from tests.helpers import make_job, make_mapping, make_staff, make_workspace, purchase_rows, write_csv

SECRET_LINE = "SECRET_KEY=do-not-show-this-line"


@pytest.fixture
def tree(tmp_path):
    """root/ holds the partner's exports; outside/ (beside it) a file nobody may read through a job."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "exports").mkdir(parents=True)
    outside.mkdir()
    write_csv(root / "exports" / "a.csv", purchase_rows(2))
    (outside / "env.csv").write_text(f"id,value\n1,{SECRET_LINE}\n")
    return root, outside


def refused(config: dict, root: Path) -> str:
    with pytest.raises(SourceError) as e:
        list(FileSource.from_config(config, root=root).read())
    assert SECRET_LINE not in str(e.value)
    return str(e.value)


def test_relative_paths_are_read_from_the_root(tree):
    root, _ = tree
    items = list(FileSource.from_config({"path": "exports/a.csv"}, root=root).read())
    assert len(items) == 2
    assert len(list(FileSource.from_config({"path": "exports/*.csv"}, root=root).read())) == 2


@pytest.mark.parametrize(
    "path",
    [
        "{outside}/env.csv",  # absolute, elsewhere
        "../outside/env.csv",  # relative, climbing out
        "{root}/exports/../../outside/env.csv",  # absolute, climbing out
        "{root}/../outside/*.csv",  # a glob whose folder is outside
        "{root}/*/../../outside/*.csv",  # '..' after a wildcard: the check before the first one is not enough
        "{root}/**/../../outside/env.csv",
    ],
)
def test_paths_outside_the_root_are_refused_when_built(tree, path):
    root, outside = tree
    with pytest.raises(SourceError, match="outside the source folder|cannot follow a wildcard"):
        FileSource.from_config({"path": path.format(root=root, outside=outside)}, root=root)


def test_a_symbolic_link_to_a_folder_outside_is_refused(tree):
    root, outside = tree
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SourceError, match="outside the source folder"):
        FileSource.from_config({"path": "link/*.csv"}, root=root)
    with pytest.raises(SourceError, match="outside the source folder"):
        FileSource.from_config({"path": "link/env.csv"}, root=root)


def test_a_symbolic_link_to_a_file_outside_met_by_a_glob_stops_the_run_before_any_reading(tree):
    root, outside = tree
    (root / "exports" / "b.csv").symlink_to(outside / "env.csv")
    message = refused({"path": "**/*.csv"}, root)
    assert "b.csv resolves to a file outside the source folder" in message


def test_a_file_swapped_for_a_link_after_the_listing_is_refused_when_opened(tree):
    root, outside = tree
    source = FileSource.from_config({"path": "exports/*.csv"}, root=root)
    items = source.read()  # listed and checked now; opened when iterated
    target = root / "exports" / "a.csv"
    target.unlink()
    target.symlink_to(outside / "env.csv")
    with pytest.raises(SourceError, match="outside the source folder"):
        next(items)


def test_a_link_inside_the_root_to_a_file_inside_is_read(tree):
    root, _ = tree
    (root / "latest.csv").symlink_to(root / "exports" / "a.csv")
    assert len(list(FileSource.from_config({"path": "latest.csv"}, root=root).read())) == 2


def test_without_a_root_the_pure_source_reads_anywhere(tree):
    # feeds.sources.files knows no settings: the engine always builds it with the root (below).
    _, outside = tree
    assert len(list(FileSource.from_config({"path": str(outside / "env.csv")}).read())) == 1


# --------------------------------------------------------------------------- whatever made the job


@pytest.fixture
def rooted(tree, settings):
    root, outside = tree
    settings.MPFEED_SOURCE_ROOT = root
    return root, outside


def test_the_source_folder_exists_always(settings, tmp_path):
    settings.MPFEED_SOURCE_ROOT = tmp_path / "not" / "yet"
    assert source_root().is_dir()
    build_source("file", {"path": "x.csv"})
    assert (tmp_path / "not" / "yet").is_dir()


def test_the_default_source_folder_is_in_the_projects_data_folder():
    from django.conf import settings as django_settings

    # What the settings give with no MPFEED_SOURCE_ROOT in the environment (the tests set their own).
    env = {k: v for k, v in os.environ.items() if k != "MPFEED_SOURCE_ROOT"}
    code = "from mpfeed_site import settings; print(settings.MPFEED_SOURCE_ROOT)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=django_settings.BASE_DIR, capture_output=True)
    assert out.stdout.decode().strip() == str(Path(django_settings.BASE_DIR) / "var" / "sources")


@pytest.mark.django_db
def test_the_admin_form_refuses_a_glob_climbing_out(rooted):
    root, outside = rooted
    workspace = make_workspace()
    mapping = make_mapping(workspace)
    for path in (f"{root}/*/../../outside/*.csv", str(outside / "env.csv"), "../outside/env.csv"):
        form = SyncJobAdminForm(
            data={
                "workspace": workspace.pk,
                "name": "escape",
                "mapping": mapping.pk,
                "endpoint_mode": "events",
                "enabled": "on",
                "source_kind": "file",
                "source_config": f'{{"path": "{path}"}}',
            }
        )
        assert not form.is_valid(), path
        assert "source_config" in form.errors, path
    assert not SyncJob.objects.exists()


@pytest.mark.django_db
def test_the_staff_page_refuses_a_glob_climbing_out(client, rooted):
    root, _ = rooted
    workspace = make_workspace()
    mapping = make_mapping(workspace)
    client.force_login(make_staff("sam"))
    response = client.post(
        reverse("feeds:job_new", args=[workspace.slug]),
        {
            "name": "escape",
            "mapping": mapping.pk,
            "endpoint_mode": "events",
            "enabled": "on",
            "source_kind": "file",
            "source_config": f'{{"path": "{root}/*/../../outside/*.csv"}}',
        },
    )
    assert response.status_code == 200 and not SyncJob.objects.exists()
    assert response.context["form"].errors["source_config"]


@pytest.mark.django_db
def test_the_command_refuses_a_file_outside(rooted):
    _, outside = rooted
    workspace = make_workspace()
    make_mapping(workspace)
    with pytest.raises(CommandError, match="outside the source folder"):
        call_command("run_sync", f"--workspace={workspace.name}", f"--file={outside / 'env.csv'}", stdout=io.StringIO())
    assert not SyncRun.objects.exists()


@pytest.mark.django_db
def test_a_job_stored_with_a_path_outside_cannot_start_and_its_preview_shows_nothing_of_the_file(
    client, rooted, sandbox
):
    # E.g. a job made before the folder was set, or written to the database by hand.
    _, outside = rooted
    workspace = make_workspace(sandbox)
    job = make_job(workspace, outside / "env.csv")
    with pytest.raises(sync.SyncError, match="outside the source folder"):
        sync.start_run(job)
    assert not SyncRun.objects.exists() and not RejectedRecord.objects.exists()

    client.force_login(make_staff("sam"))
    body = client.get(reverse("feeds:job_preview", args=[workspace.slug, job.pk])).content.decode()
    assert "outside the source folder" in body and SECRET_LINE not in body


def test_a_pipe_in_the_folder_is_refused_without_blocking(tree):
    root, outside = tree
    os.mkfifo(root / "exports" / "pipe.csv")
    with pytest.raises(SourceError, match="not a regular file"):
        list(FileSource.from_config({"path": "exports/pipe.csv"}, root=root).read())
    # A file swapped for a pipe after the listing is refused when opened, not waited on.
    source = FileSource.from_config({"path": "exports/a.csv"}, root=root)
    items = source.read()
    (root / "exports" / "a.csv").unlink()
    os.mkfifo(root / "exports" / "a.csv")
    with pytest.raises(SourceError, match="not a regular file"):
        next(items)
