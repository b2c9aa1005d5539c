"""Progress in the run's log: every operation logs its own, however long the process lives."""

from __future__ import annotations

import logging

from lifeline.tasks.run.progress import reporter


def test_a_second_backup_of_the_same_dataset_logs_its_progress_too(caplog):
    logger = logging.getLogger("lifeline.test.progress")
    with caplog.at_level(logging.INFO, logger=logger.name):
        for _ in range(2):  # two nightly backups in one `lifeline serve` process
            report = reporter("backup recordings", logger)
            for fraction in (0.0, 0.5, 1.0):
                report(fraction, 2**20)
    assert [record.getMessage() for record in caplog.records] == [
        "backup recordings: 0% (1.0 MiB)", "backup recordings: 50% (1.0 MiB)", "backup recordings: 100% (1.0 MiB)",
    ] * 2


def test_one_operation_logs_each_tenth_once(caplog):
    logger = logging.getLogger("lifeline.test.progress")
    with caplog.at_level(logging.INFO, logger=logger.name):
        report = reporter("restore 1234abcd", logger)
        for fraction in (0.31, 0.33, 0.35, 0.2):
            report(fraction, 0)
    assert [record.getMessage() for record in caplog.records] == ["restore 1234abcd: 30% (0.0 MiB)"]
