"""A set is "done" for the client only when its top-5 can be read with it."""
from explain.models import ExplanationSet, InputImage, Job
from explain.serializers import ExplanationSetSerializer


def make_set(owner, model) -> ExplanationSet:
    image = InputImage.objects.create(owner=owner, name="x.png", file="x.png", display_file="x.jpg", width=4,
                                      height=4, display_width=4, display_height=4, sha256="0" * 64)
    return ExplanationSet.objects.create(owner=owner, model=model, image=image)


def status_of(explanation_set, rf) -> str:
    request = rf.get("/")
    return ExplanationSetSerializer(explanation_set, context={"request": request}).data["status"]


def test_finished_prediction_read_with_a_stale_set_row_is_still_running(alice, lite0, rf):
    # The API reads the set row, then its jobs: a worker finishing in between must not make the
    # client see "done" with no top-5.
    explanation_set = make_set(alice, lite0)
    Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.PREDICT, status=Job.Status.DONE)
    assert status_of(explanation_set, rf) == Job.Status.RUNNING
    explanation_set.predictions = [{"index": 967, "name": "espresso", "probability": 0.9}]
    explanation_set.save(update_fields=["predictions"])
    assert status_of(explanation_set, rf) == Job.Status.DONE


def test_queued_and_failed_predictions_are_reported_as_they_are(alice, lite0, rf):
    explanation_set = make_set(alice, lite0)
    job = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.PREDICT)
    assert status_of(explanation_set, rf) == Job.Status.QUEUED
    job.mark_failed("broken")
    assert status_of(explanation_set, rf) == Job.Status.FAILED
