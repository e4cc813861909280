"""Task registry: every stage objective declares what it needs and yields; unknown names fail with the list."""

import pytest

from emofuse.tasks import get_task, list_tasks
from emofuse.tasks.regression import REGRESSION_TASKS


def test_every_builtin_task_is_registered_with_its_needs():
    assert {"distill", "classify", "finetune", "finetune_encoder", "regress", "sew", "seqsew", "mgcma"} <= set(
        list_tasks()
    )
    distill = get_task("distill")
    assert distill.teacher_states and distill.target == "none" and not distill.moddrop
    assert get_task("finetune_encoder").raw_inputs and get_task("classify").target == "classification"
    assert set(list_tasks("regression")) == set(REGRESSION_TASKS)


def test_default_monitor_rules():
    distill, ft, classify = get_task("distill"), get_task("finetune_encoder"), get_task("classify")
    assert distill.monitor({}, {"monitor"}, "val/ua", "max") == ("val/loss", "min")  # only a stage setting wins
    assert distill.monitor({"monitor": "val/ua"}, set(), "val/ua", "max") == ("val/ua", "max")
    assert ft.monitor({}, set(), "val/loss", "min") == ("val/ua", "max")
    assert ft.monitor({}, {"monitor"}, "val/wa", "max") == ("val/wa", "max")  # a top-level setting wins too
    assert classify.monitor({}, set(), "val/loss", "min") == ("val/loss", "min")


def test_unknown_task_names_the_stage_and_the_closest():
    with pytest.raises(ValueError, match=r"stage 'ft': unknown task 'clasify' \(did you mean 'classify'\?\); use "):
        get_task("clasify", "ft")


def test_distill_without_teacher_states_is_a_clear_error():
    from emofuse.models import create_model

    model = create_model("cmd_student", audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert", with_head=False)
    with pytest.raises(ValueError, match="stage 's1' distils, but the dataset has no cached teacher states"):
        get_task("distill").build(model, {}, object(), "s1")
