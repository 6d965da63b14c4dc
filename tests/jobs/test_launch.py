"""jobs.launch.job_launch: the one launch with an upload (the web API's and the CLI's), and
check_may_launch, the one power check before anything is stored."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pydantic import BaseModel, ConfigDict

from jobs.exceptions import InvalidUpload, KindNotAllowed
from jobs.kinds.registry import InvalidParams, JobKind, get_kind, register, unregister
from jobs.launch import check_may_launch, job_launch
from jobs.models import Job, Upload

pytestmark = pytest.mark.django_db


class StaffUploadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_id: uuid.UUID


@pytest.fixture
def staff_upload_kind() -> Iterator[JobKind]:
    kind = register(
        JobKind(
            name="test_staff_upload",
            title="Test: staff upload",
            description="",
            params_model=StaffUploadParams,
            run=lambda ctx, params: None,
            admin_only=True,
            upload_param="upload_id",
        )
    )
    yield kind
    unregister(kind.name)


def csv_file(name: str = "data.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b"a,b\n1,2\n", "text/csv")


def test_a_launch_with_a_file_stores_it_as_the_jobs_upload(make_user):
    user = make_user()
    job = job_launch(owner=user, kind="csv_profile", params={}, file=csv_file(), rate_limit=False)
    upload = Upload.objects.get(owner=user)
    assert job.params == {"upload_id": str(upload.pk)}


def test_the_power_is_checked_before_the_file_is_stored(make_user, staff_upload_kind):
    user = make_user()
    with pytest.raises(KindNotAllowed):
        check_may_launch(user, staff_upload_kind)
    with pytest.raises(KindNotAllowed):
        job_launch(owner=user, kind=staff_upload_kind.name, params={}, file=csv_file())
    assert not Upload.objects.exists() and not Job.objects.exists()


def test_a_refused_launch_keeps_nothing(make_user):
    user = make_user()
    with pytest.raises(InvalidParams):
        job_launch(owner=user, kind="csv_profile", params={"colour": "red"}, file=csv_file())
    assert not Upload.objects.exists() and not Job.objects.exists()


def test_a_file_is_refused_for_a_kind_that_takes_none_and_a_bad_file_for_one_that_does(make_user):
    user = make_user()
    with pytest.raises(InvalidUpload, match="takes no file"):
        job_launch(owner=user, kind="simulate", params={}, file=csv_file())
    with pytest.raises(InvalidUpload, match=r"Expected a \.csv"):
        job_launch(owner=user, kind="csv_profile", params={}, file=csv_file("data.xlsx"))
    assert not Upload.objects.exists() and not Job.objects.exists()


def test_an_operator_may_launch_a_staff_kind(make_user, staff_upload_kind):
    check_may_launch(make_user(operator=True), get_kind(staff_upload_kind.name))
