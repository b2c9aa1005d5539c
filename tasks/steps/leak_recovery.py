"""The data-leak procedure: a host was compromised at time T.

0. Hold the old repository: from now on no retention forgets and no prune removes anything in it.
1. Isolate the host: its host key out of known_hosts, its database role NOLOGIN (sessions ended),
   the old repository's storage key deactivated (see tasks/steps/leak.py for what each "revoke" means).
2. A new repository with a new random password (file mode 0600), chunker parameters copied.
3. Copy into it only the snapshots the ledger recorded before T, by id: snapshot times are set
   by the client and can be forged (`restic backup --time`); a snapshot Lifeline never recorded
   is refused, whatever time it claims.
4. Retire the old repository: kept untouched as evidence, marked revoked; its password does not
   open the new one.
5. Restore the dataset from the newest copied snapshot, from the new repository.
"""

from __future__ import annotations

from pathlib import Path

from lifeline.configs.drills import LeakRecovery
from lifeline.configs.loading import LoadedPlan
from lifeline.configs.settings import Settings
from lifeline.tasks.run.ledger import Ledger
from lifeline.tasks.run.record import Journal
from lifeline.tasks.steps import leak
from lifeline.tasks.steps.repositories import dataset_tags, open_repository
from lifeline.tasks.steps.repository_slots import ensure_limits
from lifeline.tasks.steps.restore import ChosenSnapshot, restore_dataset


def recover_from_leak(loaded: LoadedPlan, settings: Settings, journal: Journal, recovery: LeakRecovery) -> ChosenSnapshot:
    """Run the procedure in the current run (drill or incident); T is the run's incident time."""
    plan, record = loaded.plan, journal.record
    incident_at = record.incident_at
    if incident_at is None:
        raise leak.LeakRecoveryFailed("the data-leak recovery needs the incident time T (when the host was compromised)")
    if recovery.dataset not in plan.datasets:
        raise leak.LeakRecoveryFailed(f"dataset {recovery.dataset!r} is not in the plan")
    dataset = plan.datasets[recovery.dataset]
    if not dataset.paths:
        raise leak.LeakRecoveryFailed(f"dataset {recovery.dataset!r} is not a files dataset: the data-leak "
                                      "recovery restores files (restore a database with `lifeline restore`)")
    old = open_repository(plan, dataset.repository, settings)
    new = leak.clean_repository(old, recovery.new_repository_url, Path(recovery.new_password_file), settings, plan)
    tags = dataset_tags(plan, recovery.dataset)

    ledger = Ledger(settings.ledger)
    leak.hold_old_repository(old, ledger, record.id, f"data-leak {record.kind}: {recovery.host} compromised at "
                             f"{incident_at.isoformat(timespec='seconds')}; the trusted snapshots are here",
                             journal=journal, step_name=f"hold repository {dataset.repository}")
    leak.revoke_host_key(plan, recovery.host, journal=journal, step_name=f"revoke host key of {recovery.host}")
    leak.revoke_database_role(plan, recovery.database_role, journal=journal, step_name="revoke database access")
    leak.revoke_storage_access(plan, dataset.repository, journal=journal, step_name="revoke storage access")
    leak.create_clean_repository(old, new, journal=journal, step_name="create clean repository")
    trusted = [facts.snapshot_id for facts in ledger.snapshots_recorded(plan.name, recovery.dataset, before=incident_at)
               if facts.repository == dataset.repository]
    ensure_limits(plan, {old.name: old})
    copied = leak.copy_trusted_snapshots(old, new, tags, trusted, incident_at, settings.locks_dir, journal=journal,
                                         step_name="copy trusted snapshots")
    shared = sorted(name for name, entry in plan.repositories.items()
                    if name != dataset.repository and Path(entry.password_file) == Path(old.password_file))
    leak.retire_old_repository(old, new, shared, journal=journal, step_name="revoke old repository")
    chosen = restore_dataset(loaded, settings, journal, recovery.dataset, str(dataset.paths[0]), replace=True,
                             incident_at=incident_at, snapshot_ids=list(copied.copies.values()), repository=new)
    original = next(source for source, copy in copied.copies.items() if copy == chosen.id)
    with journal.step("data-leak summary") as entry:
        entry.detail.update({
            "incident_at": incident_at.isoformat(), "host": recovery.host,
            "copied": sorted(copied.copies), "refused": [item["id"] for item in copied.detail["refused"]],
            "restored": {"id_in_new_repository": chosen.id, "original_id": original, "time": chosen.time.isoformat()},
            "new_repository": new.display_url, "new_password_file": str(new.password_file),
            "new_password_file_mode": oct(Path(new.password_file).stat().st_mode & 0o777),
            "old_repository": old.display_url, "old_repository_revoked": True,
        })
    return chosen
