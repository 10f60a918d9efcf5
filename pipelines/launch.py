"""Runs and ticks on the Dagster instance from this process, as the daemon would record them.

The demo (and any driver that runs jobs in order) creates each run on the instance with its code
location origin — the `mallard` location, `pipelines.definitions` — and executes it here with the
in-process executor: the run shows under its job, on Overview and on the asset pages exactly as a
run launched from the UI, and the heavy libraries are imported once for all runs instead of once
per run (a launched run starts a process that loads the code location again) or per step.

Sensor ticks evaluated here are recorded as the daemon records them (the sensor's tick history in
the UI, the runs they requested tagged with the sensor and run key), and `arm` leaves every sensor
and schedule RUNNING (or STOPPED, with the reason) with the cursors the driver reached, so the
daemon of `make dev` carries on from there.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from dagster._core.remote_representation.external import RemoteRepository
    from dagster._core.scheduler.instigation import InstigatorTick

LOCATION_NAME = "mallard"
"""The code location's name wherever the clone lives: workspace.yaml and pyproject's
[tool.dg.project] code_location_name say the same (a test checks). Instigator states and ticks
are found by it, so a sensor the demo armed is the sensor `make dev` runs."""
REPOSITORY_NAME = "__repository__"
MODULE = "pipelines.definitions"
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}


@dataclass
class LaunchedRun:
    """A run created on the instance and executed here."""

    run_id: str
    job_name: str
    success: bool
    seconds: float
    materialized: list[str] = field(default_factory=list)


@dataclass
class Tick:
    """A sensor evaluation recorded on the instance."""

    sensor: str
    record: InstigatorTick
    cursor: str | None
    run_requests: list[dg.RunRequest]
    skip_message: str | None
    timestamp: float


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class Launcher:
    """The `mallard` code location loaded in this process, over one instance."""

    def __init__(self, instance: dg.DagsterInstance, working_directory: Path | None = None):
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

        from mallard.config import PROJECT_ROOT

        started = time.perf_counter()
        self.instance = instance
        origin = InProcessCodeLocationOrigin(
            loadable_target_origin=LoadableTargetOrigin(
                executable_path=sys.executable,
                module_name=MODULE,
                working_directory=str(working_directory or PROJECT_ROOT),
            ),
            location_name=LOCATION_NAME,
        )
        self.location = origin.create_location(instance)
        self.repository: RemoteRepository = self.location.get_repository(REPOSITORY_NAME)
        self.load_seconds = time.perf_counter() - started
        self.seconds_outside_steps = 0.0  # creating runs and reading their events back

    def close(self) -> None:
        self.location.cleanup()

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def run(
        self,
        job_name: str,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> LaunchedRun:
        """Create a run of `job_name` on the instance (origin, tags, config) and execute it here,
        in process; never raises for a failed step (the result says so)."""
        from dagster._core.events import DagsterEventType
        from dagster._core.execution.api import execute_run
        from dagster._utils.hosted_user_process import recon_job_from_origin

        started = time.perf_counter()
        remote = self.repository.get_full_job(job_name)
        recon = recon_job_from_origin(remote.get_python_origin())
        run = self.instance.create_run_for_job(
            job_def=recon.get_definition(),
            run_config=_merge(IN_PROCESS, run_config or {}),
            tags=dict(tags or {}),
            remote_job_origin=remote.get_remote_origin(),
            job_code_origin=remote.get_python_origin(),
        )
        created = time.perf_counter()
        result = execute_run(recon, run, self.instance)
        executed = time.perf_counter()
        materialized = [
            record.dagster_event.asset_key.to_user_string()
            for record in self.instance.all_logs(
                run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
            )
            if record.dagster_event and record.dagster_event.asset_key
        ]
        done = time.perf_counter()
        self.seconds_outside_steps += (created - started) + (done - executed)
        return LaunchedRun(run.run_id, job_name, result.success, done - started, materialized)

    def tick(
        self,
        sensor_name: str,
        cursor: str | None,
        resources: Mapping[str, Any] | None = None,
        definitions: dg.Definitions | None = None,
    ) -> Tick:
        """Evaluate a sensor here and record the tick (cursor, skip reason or requests) as the
        daemon does; `record_runs` then adds the runs it requested."""
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import TickData, TickStatus

        remote = self.repository.get_sensor(sensor_name)
        started = time.time()
        tick = self.instance.create_tick(
            TickData(
                instigator_origin_id=remote.get_remote_origin_id(),
                instigator_name=sensor_name,
                instigator_type=InstigatorType.SENSOR,
                status=TickStatus.STARTED,
                timestamp=started,
                selector_id=remote.selector_id,
            )
        )
        defs = definitions or _definitions()
        sensor = defs.resolve_sensor_def(sensor_name)
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            definitions=defs,
            resources=resources if resources is not None else defs.resources,
        ) as context:
            result = sensor.evaluate_tick(context)
        requests = list(result.run_requests or [])
        status = TickStatus.SUCCESS if requests else TickStatus.SKIPPED
        tick = tick.with_status(
            status,
            cursor=result.cursor,
            skip_reason=None if requests else (result.skip_message or "no run requested"),
            run_requests=requests,
        )
        self.instance.update_tick(tick)
        return Tick(sensor_name, tick, result.cursor, requests, result.skip_message, started)

    def run_request(
        self, tick: Tick, request: dg.RunRequest, extra_config: Mapping[str, Any] | None = None
    ) -> LaunchedRun:
        """Execute a run a recorded tick requested, tagged as the daemon tags it (`extra_config`
        is merged into the request's run config, e.g. the console's log level)."""
        from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG, TICK_ID_TAG

        tags = {
            **request.tags,
            SENSOR_NAME_TAG: tick.sensor,
            TICK_ID_TAG: str(tick.record.tick_id),
        }
        if request.run_key:
            tags[RUN_KEY_TAG] = request.run_key
        if not request.job_name:
            raise ValueError(f"{tick.sensor} requested a run without naming its job")
        config = _merge(request.run_config or {}, extra_config or {})
        launched = self.run(request.job_name, run_config=config, tags=tags)
        tick.record = tick.record.with_run_info(launched.run_id, request.run_key)
        self.instance.update_tick(tick.record)
        return launched

    def standard_sensors(self) -> list[str]:
        """The location's sensors that `tick` evaluates: all but the automation-condition
        sensors (the daemon evaluates those against the asset graph, not a function)."""
        from dagster._core.definitions.sensor_definition import SensorType

        automation = (SensorType.AUTO_MATERIALIZE, SensorType.AUTOMATION)
        return [s.name for s in self.repository.get_sensors() if s.sensor_type not in automation]

    def arm(
        self,
        cursors: Mapping[str, str | None],
        stopped: Mapping[str, str],
        last_ticks: Mapping[str, float] | None = None,
    ) -> dict[str, str]:
        """Every sensor and schedule of the location RUNNING, with the given cursors, except
        those in `stopped` (name → why), which are STOPPED. Returns name → status."""
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import (
            InstigatorState,
            InstigatorStatus,
            ScheduleInstigatorData,
            SensorInstigatorData,
        )

        now = time.time()
        statuses: dict[str, str] = {}
        for sensor in self.repository.get_sensors():
            status = (
                InstigatorStatus.STOPPED if sensor.name in stopped else InstigatorStatus.RUNNING
            )
            last = (last_ticks or {}).get(sensor.name)
            data = SensorInstigatorData(
                last_tick_timestamp=last,
                min_interval=sensor.min_interval_seconds,
                cursor=cursors.get(sensor.name),
                last_tick_start_timestamp=last,
                last_sensor_start_timestamp=now,
                sensor_type=sensor.sensor_type,
                last_tick_success_timestamp=last,
            )
            self._store(
                InstigatorState(sensor.get_remote_origin(), InstigatorType.SENSOR, status, data),
                sensor.get_remote_origin_id(),
                sensor.selector_id,
            )
            statuses[sensor.name] = status.value
        for schedule in self.repository.get_schedules():
            status = (
                InstigatorStatus.STOPPED if schedule.name in stopped else InstigatorStatus.RUNNING
            )
            schedule_data = ScheduleInstigatorData(schedule.cron_schedule, start_timestamp=now)
            self._store(
                InstigatorState(
                    schedule.get_remote_origin(), InstigatorType.SCHEDULE, status, schedule_data
                ),
                schedule.get_remote_origin_id(),
                schedule.selector_id,
            )
            statuses[schedule.name] = status.value
        return statuses

    def _store(self, state, origin_id: str, selector_id: str) -> None:
        if self.instance.get_instigator_state(origin_id, selector_id) is None:
            self.instance.add_instigator_state(state)
        else:
            self.instance.update_instigator_state(state)


def _definitions() -> dg.Definitions:
    from pipelines.definitions import defs

    return defs


def write_debug_log(
    instance: dg.DagsterInstance, run_id: str, path: Path, job_name: str = ""
) -> int:
    """Append every event of a run (DEBUG included) from the instance's event log to `path`;
    returns how many were written."""
    records = instance.all_logs(run_id)
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.timestamp))
            level = logging.getLevelName(record.level)
            step = f" {record.step_key}" if record.step_key else ""
            event = record.dagster_event
            kind = f" {event.event_type_value}" if event is not None else ""
            handle.write(
                f"{when} {level} {record.job_name or job_name} {run_id[:8]}{step}{kind}: "
                f"{record.message}\n"
            )
    return len(records)
