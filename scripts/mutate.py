#!/usr/bin/env python3
# ruff: noqa: E501 - the mutations quote whole lines of code and test ids
"""`make mutate`: the curated mutations of the guarantee code (the session layer, the recipes'
protected creates, the CLI), one at a time, in a scratch copy of the tree; each must make the
tests named beside it fail (KILLED). Not part of CI (slow). Arguments: run only the mutations
whose name contains one of them."""

from __future__ import annotations

#: (name, file, code, mutated code, tests that must fail)
T = "tests/transport/"
R = "tests/recipes/"
S = "tests/services/"
C = "tests/chaos/test_checkers.py::"
M = [
    (
        "auth refusal ignored",
        "aiocoord/transport/session.py",
        "        error = error_for_code(err)\n        if call.future is not None:",
        "        error = error_for_code(err)\n        if call.future is None:\n            return\n        if call.future is not None:",
        [
            T
            + "test_session_rules.py::test_refused_credentials_fail_the_connect_without_a_reconnect_loop",
            T + "test_session_rules.py::test_a_refusal_on_reconnect_is_terminal",
        ],
    ),
    (
        "no reconnect delay",
        "aiocoord/transport/session.py",
        "delay = random.uniform(0, self.reconnect_delay)",
        "delay = 0.0",
        [
            T
            + "test_session_rules.py::test_clients_of_a_dropped_server_reconnect_spread_over_the_delay"
        ],
    ),
    (
        "no backoff",
        "aiocoord/transport/session.py",
        "backoff = min(backoff * 2, _MAX_BACKOFF)",
        "backoff = _FIRST_BACKOFF",
        [T + "test_session_rules.py::test_backoff_while_every_host_fails"],
    ),
    (
        "zxid kept after LOST",
        "aiocoord/transport/state.py",
        "self.session_id, self.passwd, self.last_zxid = 0, _NO_PASSWD, 0",
        "self.session_id, self.passwd = 0, _NO_PASSWD",
        [
            T + "test_session_rules.py::test_a_server_rebuilt_with_older_data_gets_a_new_session",
            T + "test_state.py",
        ],
    ),
    (
        "in-flight ignored while closing",
        "aiocoord/transport/session.py",
        "        loop = self._loop\n        assert loop is not None\n        if conn is not self._conn:",
        "        loop = self._loop\n        assert loop is not None\n        if self._closing:\n            return\n        if conn is not self._conn:",
        [
            T
            + "test_session_rules.py::test_close_ends_every_request_when_the_connection_dies_meanwhile"
        ],
    ),
    (
        "failed enter not closed",
        "aiocoord/transport/client.py",
        "            await self._session.close()  # a failed enter leaves no session behind\n",
        "            pass\n",
        [T + "test_session_rules.py::test_a_failed_enter_leaves_no_session"],
    ),
    (
        "namespace created level by level",
        "aiocoord/transport/client.py",
        "            if await self._session.submit(Exists(node, node, None, False)) is not None:\n                break",
        "            if await self._session.submit(Exists(node, node, None, False)) is not None:\n                pass",
        [T + "test_session_rules.py::test_an_existing_namespace_under_a_restricted_parent_is_used"],
    ),
    (
        "stale expired answer applied",
        "aiocoord/transport/state.py",
        "                if sent_id != self.connect_id or self.session_id == 0:",
        "                if False:",
        [
            T
            + "test_session_rules.py::test_a_stale_expired_answer_neither_repeats_lost_nor_fails_new_requests",
            T + "test_state.py",
        ],
    ),
    (
        "handshake bounded by the requested timeout",
        "aiocoord/transport/session.py",
        "attempt_timeout = max(0.1, machine.timeout / max(1, len(self.hosts)))",
        "attempt_timeout = max(0.1, self.requested_timeout / max(1, len(self.hosts)))",
        [
            T
            + "test_session_rules.py::test_a_black_holed_member_does_not_outlast_the_negotiated_timeout"
        ],
    ),
    (
        "first address only",
        "aiocoord/transport/hosts.py",
        "found = [Address(name, port, ip) for ip in dict.fromkeys(ips)]",
        "found = [Address(name, port, ip) for ip in dict.fromkeys(ips)][:1]",
        [T + "test_session_rules.py::test_every_address_of_a_name_is_tried"],
    ),
    (
        "undecodable reply keeps the connection",
        "aiocoord/transport/session.py",
        '            conn.fail(f"undecodable reply from {conn.host}")\n',
        "",
        [
            T
            + "test_session_rules.py::test_an_undecodable_reply_fails_its_request_and_drops_the_connection"
        ],
    ),
    (
        "reads in flight ignored by removal",
        "aiocoord/transport/watches.py",
        "        return path in self._reg[kind] or self._arming[kind, path] > 0",
        "        return path in self._reg[kind]",
        [
            T
            + "test_session_rules.py::test_removing_a_watcher_keeps_the_server_watch_a_read_in_flight_needs"
        ],
    ),
    (
        "LOST counted from the notice",
        "aiocoord/transport/state.py",
        "self.lost_deadline = last_recv + self.timeout",
        "self.lost_deadline = last_recv + self.timeout * 5 / 3",
        [
            T + "test_session_rules.py::test_lost_is_reported_within_the_timeout_of_the_last_frame",
            T + "test_state.py",
        ],
    ),
    (
        "astral paths pass",
        "aiocoord/transport/paths.py",
        "        o > 0xFFFF\n        or o == 0",
        "        o == 0",
        [T + "test_input_validation.py"],
    ),
    (
        "async watchers dropped",
        "aiocoord/transport/session.py",
        "        if inspect.isawaitable(result):",
        "        if False:",
        [T + "test_session_rules.py::test_an_async_watcher_runs"],
    ),
    (
        "one-shot watch set under a persistent one",
        "aiocoord/transport/session.py",
        "        return not self.watches.covered(kind, path)",
        "        return True",
        [T + "test_watch_rules.py"],
    ),
    (
        "covered one-shot removed on the server",
        "aiocoord/transport/watches.py",
        "            if self.covered(kind, path):\n                return False",
        "            if False:\n                return False",
        [T + "test_watch_rules.py"],
    ),
    (
        "persistent removal never falls back to ANY",
        "aiocoord/transport/session.py",
        "            wtype = ANY_WATCH",
        "            pass",
        [T + "test_watch_rules.py", T + "test_wire_rules.py"],
    ),
    (
        "no pings",
        "aiocoord/transport/session.py",
        '                conn.write_request(XID.PING, OP.PING, b"")',
        "                pass",
        [T + "test_wire_rules.py"],
    ),
    (
        "request limit off by one",
        "aiocoord/transport/requests.py",
        "    if len(body) + 8 > MAX_PACKET:",
        "    if len(body) + 7 > MAX_PACKET:",
        [T + "test_wire_rules.py"],
    ),
    (
        "SetWatches not chunked",
        "aiocoord/transport/session.py",
        "_SET_WATCHES_CHUNK: Final = 128 * 1024",
        "_SET_WATCHES_CHUNK: Final = 1 << 40",
        [T + "test_wire_rules.py"],
    ),
    (
        "remove_watch only local",
        "aiocoord/transport/client.py",
        "        for kind in {kind.server_type: kind for kind in sorted(kinds)}.values():",
        "        for kind in ():",
        [T + "test_wire_rules.py"],
    ),
    (
        "replies matched to the wrong request",
        "aiocoord/transport/connection.py",
        "            req = self._pending.pop(xid, None)",
        "            req = self._pending.popitem()[1] if self._pending else None",
        [T + "test_wire_rules.py"],
    ),
    (
        "writes in flight retried like reads",
        "aiocoord/transport/session.py",
        "            if req.idempotent and req.deadline > now:",
        "            if req.deadline > now:",
        [T + "test_session_faults.py"],
    ),
    (
        "watches restored to a new session after LOST",
        "aiocoord/transport/session.py",
        "            self._end_watches(KeeperState.EXPIRED)\n",
        "",
        [T + "test_watches.py", T + "test_session_faults.py"],
    ),
    (
        "publish not retried after a lost reply",
        "aiocoord/recipes/config/store.py",
        "                unknown = True\n                await client.wait_connected()",
        "                raise",
        [R + "test_protected_creates.py::test_publish_with_a_lost_reply_makes_one_version"],
    ),
    (
        "publish retried without its key node",
        "aiocoord/recipes/config/store.py",
        '            Op.create(key_node),\n            Op.create(f"{self.path}/{PREFIX}"',
        '            Op.check(self.path),\n            Op.create(f"{self.path}/{PREFIX}"',
        [R + "test_protected_creates.py::test_publish_with_a_lost_reply_makes_one_version"],
    ),
    (
        "submit retried blindly after a lost reply",
        "aiocoord/recipes/tasks.py",
        "                found = await self._submitted(marker, session, exc)",
        "                found = None",
        [R + "test_protected_creates.py::test_submit_with_a_lost_reply_queues_one_task"],
    ),
    (
        "submit finds the wrong task",
        "aiocoord/recipes/tasks.py",
        "                    elif stat.czxid < czxid:",
        "                    elif stat.czxid > czxid:",
        [
            R
            + "test_protected_creates.py::test_submit_with_a_lost_reply_finds_its_task_among_others"
        ],
    ),
    (
        "submit outcome claimed after a lost session",
        "aiocoord/recipes/tasks.py",
        "            if client.session_id != session:\n                raise ConnectionLoss(",
        "            if False:\n                raise ConnectionLoss(",
        [
            R
            + "test_protected_creates.py::test_submit_whose_session_was_lost_meanwhile_says_the_outcome_is_unknown"
        ],
    ),
    (
        "election candidate not adopted after a lost reply",
        "aiocoord/recipes/election.py",
        "                    ours = await client.get_ephemerals(base)\n                    break",
        "                    break",
        [
            R
            + "test_protected_creates.py::test_candidate_whose_reply_was_lost_is_adopted_not_doubled"
        ],
    ),
    (
        "CLI submit waits forever",
        "services/tasks_cmd.py",
        "            with anyio.fail_after(write_deadline(args)):",
        "            with anyio.fail_after(None):",
        [
            S
            + "test_config_services.py::test_one_shot_writes_give_up_after_twice_the_session_timeout"
        ],
    ),
    (
        "run() wraps main's exception in a group",
        "aiocoord/_run.py",
        "                exc = group.exceptions[0]\n",
        "                raise\n                exc = group.exceptions[0]\n",
        ["tests/test_run.py::test_run_raises_mains_exception_unwrapped"],
    ),
    (
        "owed deletes never paid",
        "aiocoord/transport/session.py",
        "            if event.state is SessionState.RECONNECTED and self.owed:",
        "            if False:",
        [
            T
            + "test_owed_deletes.py::test_a_delete_whose_request_was_lost_is_sent_after_the_reconnect",
            T
            + "test_owed_deletes.py::test_a_deregistration_whose_delete_was_lost_is_done_after_the_reconnect",
        ],
    ),
    (
        "owed delete removes another session's node",
        "aiocoord/transport/session.py",
        "                if stat is not None and stat.ephemeral_owner == owner:",
        "                if stat is not None:",
        [T + "test_owed_deletes.py::test_an_owed_delete_spares_a_node_another_session_holds_now"],
    ),
    (
        "owed delete not forgiven by a create",
        "aiocoord/transport/session.py",
        "        self.owed.pop(server_path, None)\n\n    async def _pay_owed",
        "        pass\n\n    async def _pay_owed",
        [
            T
            + "test_owed_deletes.py::test_an_owed_delete_is_forgiven_when_this_client_creates_the_node_again"
        ],
    ),
    (
        "owed deletes kept after LOST",
        "aiocoord/transport/session.py",
        "                self.owed.clear()  # the nodes went with the session",
        "                pass",
        [T + "test_owed_deletes.py::test_an_owed_delete_is_dropped_with_its_session"],
    ),
    (
        "a delete cancelled in flight not owed",
        "aiocoord/transport/client.py",
        "        lost = True  # until an answer came: also when cancelled with the delete in flight",
        "        lost = False",
        [T + "test_owed_deletes.py::test_a_delete_cancelled_in_flight_is_owed"],
    ),
    (
        "cancelled candidate not resigned",
        "aiocoord/recipes/election.py",
        "        except BaseException:  # cancelled while waiting (or failed): no phantom candidate\n            with anyio.CancelScope(shield=True):\n                await self.resign()",
        "        except BaseException:  # cancelled while waiting (or failed): no phantom candidate\n            with anyio.CancelScope(shield=True):\n                pass",
        [
            T
            + "test_owed_deletes.py::test_cancelled_waiting_candidate_whose_delete_was_lost_leaves_no_phantom"
        ],
    ),
    (
        "candidate create abandoned on cancel",
        "aiocoord/recipes/election.py",
        "        with anyio.CancelScope(shield=True):\n            node = await self._create_candidate()",
        "        with anyio.CancelScope():\n            node = await self._create_candidate()",
        [
            T
            + "test_owed_deletes.py::test_candidate_cancelled_with_its_create_in_flight_leaves_no_node"
        ],
    ),
    (
        "resign by a plain delete",
        "aiocoord/recipes/_session.py",
        "            if await client.delete_ephemeral(node):",
        "            if await client.delete(node) or True:",
        [
            T
            + "test_owed_deletes.py::test_cancelled_waiting_candidate_whose_delete_was_lost_leaves_no_phantom"
        ],
    ),
    (
        "deregister by a plain delete",
        "aiocoord/recipes/discovery.py",
        "                if await self._client.delete_ephemeral(self.path, only_ours=not ours):",
        "                if await self._client.delete(self.path) or True:",
        [
            T
            + "test_owed_deletes.py::test_a_deregistration_whose_delete_was_lost_is_done_after_the_reconnect"
        ],
    ),
    (
        "discovery port range unchecked",
        "aiocoord/recipes/discovery.py",
        "    if not 1 <= port <= 65535:",
        "    if False:",
        [R + "test_discovery.py::test_malformed_instances_are_skipped_and_logged_never_fatal"],
    ),
    (
        "an instance become unreadable stays in the cache",
        "aiocoord/recipes/discovery.py",
        "            old = self._instances.pop(instance_id, None)\n            if old is not None:  # it was readable",
        "            old = None\n            if old is not None:  # it was readable",
        [R + "test_discovery.py::test_malformed_instances_are_skipped_and_logged_never_fatal"],
    ),
    (
        "SUSPENDED before the term's listener missed",
        "aiocoord/recipes/election.py",
        "        if not client.state.live:  # changed before the listener was there: not missed",
        "        if False:",
        [R + "test_election.py::test_suspended_before_the_terms_listener_is_not_missed"],
    ),
    (
        "elect signals only CMD, not its process group",
        "services/reaper.py",
        "        os.killpg(pgid, signum)",
        "        os.kill(pgid, signum)",
        [
            S + "test_elect.py::test_the_whole_process_tree_stops_on_leadership_loss",
            S + "test_elect.py::test_the_whole_process_tree_stops_when_the_runner_is_sigkilled",
        ],
    ),
    (
        "elect never SIGKILLs a stubborn group",
        "services/elect.py",
        "                    signal_group(pgid, signal.SIGKILL)\n",
        "",
        [S + "test_elect.py::test_the_whole_process_tree_stops_on_leadership_loss"],
    ),
    (
        "elect reaper does nothing at EOF",
        "services/reaper.py",
        "    if pgid:\n        stop_group(pgid, grace)",
        "    if pgid:\n        pass",
        [S + "test_elect.py::test_the_whole_process_tree_stops_when_the_runner_is_sigkilled"],
    ),
    (
        "elect reaper never SIGKILLs",
        "services/reaper.py",
        "            signal_group(pgid, signal.SIGKILL)\n            return",
        "            return",
        [S + "test_elect.py::test_the_whole_process_tree_stops_when_the_runner_is_sigkilled"],
    ),
    (
        "elect reaper not told of CMD's group",
        "services/elect.py",
        "        reaper.watch(proc.pid, lost_grace)",
        "        pass",
        [S + "test_elect.py::test_the_whole_process_tree_stops_when_the_runner_is_sigkilled"],
    ),
    (
        "elect leaves what an exited CMD left behind",
        "services/elect.py",
        "        if group_alive(pgid):",
        "        if proc.returncode is None:",
        [S + "test_elect.py::test_what_a_command_leaves_behind_when_it_exits_is_stopped"],
    ),
    (
        "elect grace on leadership loss not bounded",
        "services/elect.py",
        "    return min(grace, session_timeout * LOSS_GRACE_SHARE)",
        "    return grace",
        [
            S
            + "test_elect.py::test_a_partitioned_runner_kills_its_command_before_its_session_can_expire"
        ],
    ),
    (
        "elect grace not cut by a loss during a stop",
        "services/elect.py",
        "                    deadline = min(deadline, now + lost_grace)",
        "                    pass",
        [
            S
            + "test_elect.py::test_a_runner_stopping_its_command_meets_a_partition_and_cuts_its_grace"
        ],
    ),
    (
        "elect token not in CMD's environment",
        "services/elect.py",
        '            "AIOCOORD_LEADER_TOKEN": str(term.token.czxid),',
        '            "AIOCOORD_LEADER_TOKEN": "0",',
        [S + "test_elect.py::test_the_command_gets_its_term_in_its_environment"],
    ),
    (
        "elect long grace not warned",
        "services/elect.py",
        "    if grace is not None and grace > bound:",
        "    if False:",
        [S + "test_elect.py::test_a_grace_longer_than_the_session_allows_is_warned"],
    ),
    (
        "elect restarts without backoff",
        "services/elect.py",
        "                delay = min(delay * 2, args.max_backoff)",
        "                delay = FIRST_RESTART_DELAY",
        [
            S
            + "test_elect.py::test_a_command_that_keeps_failing_is_restarted_ever_later_up_to_the_cap"
        ],
    ),
    (
        "elect backoff without a cap",
        "services/elect.py",
        "                delay = min(delay * 2, args.max_backoff)",
        "                delay = delay * 2",
        [
            S
            + "test_elect.py::test_a_command_that_keeps_failing_is_restarted_ever_later_up_to_the_cap"
        ],
    ),
    (
        "elect backoff never reset",
        "services/elect.py",
        "                    delay = FIRST_RESTART_DELAY  # it ran well for a while: a fresh failure",
        "                    pass",
        [
            S
            + "test_elect.py::test_a_command_that_keeps_failing_is_restarted_ever_later_up_to_the_cap"
        ],
    ),
    (
        "elect --once drops CMD's status",
        "services/elect.py",
        "                return outcome.status",
        "                return 0",
        [
            S
            + "test_elect.py::test_once_runs_the_command_once_then_resigns_and_exits_with_its_status"
        ],
    ),
    (
        "elect --once leadership loss not an error",
        "services/elect.py",
        "                except aiocoord.LeadershipLost as exc:\n",
        "                except aiocoord.LeadershipLost as exc:\n                    return 0\n",
        [S + "test_elect.py::test_once_fails_when_leadership_is_lost_while_the_command_runs"],
    ),
    (
        "elect --timeout ignored",
        "services/elect.py",
        "            waiting.deadline = anyio.current_time() + args.timeout",
        "            pass",
        [S + "test_elect.py::test_timeout_gives_up_waiting_for_leadership"],
    ),
    (
        "elect --timeout counts while leading",
        "services/elect.py",
        "            waiting.deadline = math.inf  # leading: --timeout is met",
        "            pass",
        [S + "test_elect.py::test_timeout_no_longer_counts_once_leading"],
    ),
    (
        "elect missing command not checked",
        "services/elect.py",
        "    if shutil.which(cmd[0]) is None:",
        "    if False:",
        [S + "test_elect.py::test_a_missing_command_is_a_one_line_error"],
    ),
    (
        "elect spawn failure crashes the runner",
        "services/elect.py",
        "        except OSError as exc:",
        "        except ValueError as exc:",
        [
            S
            + "test_elect.py::test_a_command_that_cannot_start_counts_as_a_failure_and_is_tried_again"
        ],
    ),
    (
        "agent publish unfenced",
        "services/agent.py",
        "return await store.publish(request.data, key=request.key, term=term)",
        "return await store.publish(request.data, key=request.key)",
        [
            S
            + "test_config_services.py::test_a_deposed_agent_publish_in_flight_is_refused_by_its_term"
        ],
    ),
    (
        "agent never resigns for want of its address",
        "services/agent.py",
        "            if failures >= BIND_ATTEMPTS:",
        "            if False:",
        [
            S
            + "test_config_services.py::test_an_agent_that_cannot_bind_resigns_backs_off_and_the_standby_serves"
        ],
    ),
    (
        "agent contends again at once",
        "services/agent.py",
        "            await anyio.sleep(backoff)\n",
        "",
        [
            S
            + "test_config_services.py::test_an_agent_that_cannot_bind_resigns_backs_off_and_the_standby_serves"
        ],
    ),
    (
        "agent backoff not doubled",
        "services/agent.py",
        "            backoff = min(backoff * 2, MAX_BACKOFF)",
        "            backoff = min(backoff, MAX_BACKOFF)",
        [
            S
            + "test_config_services.py::test_an_agent_that_cannot_bind_resigns_backs_off_and_the_standby_serves"
        ],
    ),
    (
        "agent --allow-empty ignored",
        "services/agent.py",
        "                allow_empty=args.allow_empty,",
        "                allow_empty=False,",
        [S + "test_config_services.py::test_agent_publishes_empty_data_only_with_allow_empty"],
    ),
    (
        "empty data published",
        "aiocoord/recipes/config/trigger.py",
        "    if not allow_empty and not request.data.strip():",
        "    if False:",
        [
            R + "test_config_trigger.py::test_empty_data_is_refused_in_every_form",
            S + "test_config_services.py::test_trigger_and_config_commands",
        ],
    ),
    (
        "whitespace-only data published",
        "aiocoord/recipes/config/trigger.py",
        "    if not allow_empty and not request.data.strip():",
        "    if not allow_empty and not request.data:",
        [R + "test_config_trigger.py::test_empty_data_is_refused_in_every_form"],
    ),
    (
        "trigger allow_empty ignored",
        "aiocoord/recipes/config/trigger.py",
        "    if not allow_empty and not request.data.strip():",
        "    if not request.data.strip():",
        [R + "test_config_trigger.py::test_empty_data_is_published_when_allowed"],
    ),
    (
        "trigger refuses the newest at 64 (the old limit)",
        "aiocoord/recipes/config/trigger.py",
        "        if len(self._open) >= self.max_connections:\n            victim = next((c for c in self._open if not c.serving), None)",
        "        if len(self._open) >= 64:\n            victim = None",
        [
            R
            + "test_config_trigger.py::test_hundreds_of_idle_and_slow_connections_never_stop_a_trigger",
            R
            + "test_config_trigger.py::test_a_new_connection_evicts_the_oldest_one_not_being_served",
        ],
    ),
    (
        "trigger never evicts",
        "aiocoord/recipes/config/trigger.py",
        "            victim = next((c for c in self._open if not c.serving), None)",
        "            victim = None",
        [
            R
            + "test_config_trigger.py::test_a_new_connection_evicts_the_oldest_one_not_being_served"
        ],
    ),
    (
        "trigger evicts a connection in its handler",
        "aiocoord/recipes/config/trigger.py",
        "            victim = next((c for c in self._open if not c.serving), None)",
        "            victim = next(iter(self._open), None)",
        [R + "test_config_trigger.py::test_busy_only_when_every_connection_is_in_a_handler"],
    ),
    (
        "trigger first byte waits the idle timeout",
        "aiocoord/recipes/config/trigger.py",
        "        with anyio.move_on_after(self.first_byte_timeout) as waiting:\n            first = await reader.read(1)",
        "        with anyio.move_on_after(self.idle_timeout) as waiting:\n            first = await reader.read(1)",
        [
            R
            + "test_config_trigger.py::test_a_connection_that_sends_nothing_is_closed_at_the_first_byte_deadline"
        ],
    ),
    (
        "app restores only after a failed command",
        "services/applier.py",
        "            if replaced and not done:",
        '            if replaced and not done and isinstance(__import__("sys").exception(), ApplyFailed):',
        [
            S
            + "test_config_services.py::test_app_stopped_during_a_command_puts_the_previous_file_back"
        ],
    ),
    (
        "app restored file not reloaded after a cancelled reload",
        "services/applier.py",
        "                if reloading and commands.reload:",
        "                if False:",
        [
            S
            + "test_config_services.py::test_app_stopped_during_a_command_puts_the_previous_file_back[reload]"
        ],
    ),
    (
        "app reload of the restored file not shielded",
        "services/applier.py",
        "                    with anyio.CancelScope(shield=True):\n                        await self._reload_restored(env)",
        "                    with anyio.CancelScope():\n                        await self._reload_restored(env)",
        [
            S
            + "test_config_services.py::test_app_stopped_during_a_command_puts_the_previous_file_back[reload]"
        ],
    ),
    (
        "app restore loses the mode",
        "services/applier.py",
        "            _write_synced(tmp, previous, mode, _kept_owner(previous_stat))",
        "            _write_synced(tmp, previous)",
        [
            S
            + "test_config_services.py::test_app_stopped_during_a_command_puts_the_previous_file_back"
        ],
    ),
    (
        "app crash copy not put back at start",
        "services/applier.py",
        "                _replace(self.backup, self.out)\n",
        "                pass\n",
        [
            S
            + "test_config_services.py::test_app_killed_during_the_check_restores_the_verified_file_at_start"
        ],
    ),
    (
        "app keeps no crash copy",
        "services/applier.py",
        "            if previous is not None and previous_stat is not None:\n",
        "            if False:\n",
        [
            S
            + "test_config_services.py::test_app_killed_during_the_check_restores_the_verified_file_at_start"
        ],
    ),
    (
        "app leaves a crash's temporary files",
        "services/applier.py",
        "                (self.out.parent / name).unlink(missing_ok=True)",
        "                pass",
        [
            S
            + "test_config_services.py::test_app_killed_during_the_check_restores_the_verified_file_at_start"
        ],
    ),
    (
        "app takes bytes in place for held without a record",
        "services/applier.py",
        "        if previous == version.data and verified is not None and verified.sha256 == sha256:",
        "        if previous == version.data:",
        [
            S
            + "test_config_services.py::test_app_checks_bytes_it_never_verified_even_when_they_are_the_newest"
        ],
    ),
    (
        "app trusts a record of other bytes",
        "services/applier.py",
        "            self.verified = None\n        self.backup.unlink(missing_ok=True)",
        "        self.backup.unlink(missing_ok=True)",
        [
            S
            + "test_config_services.py::test_app_checks_bytes_it_never_verified_even_when_they_are_the_newest"
        ],
    ),
    (
        "app resets the mode",
        "services/applier.py",
        "            mode = stat.S_IMODE(previous.st_mode) if previous is not None else o.new_mode",
        "            mode = o.new_mode",
        [S + "test_config_services.py::test_app_keeps_the_mode_and_owner_of_the_file_or_sets_them"],
    ),
    (
        "app drops the owner",
        "services/applier.py",
        "        kept = _kept_owner(previous)",
        "        kept = None",
        [S + "test_config_services.py::test_app_keeps_the_mode_and_owner_of_the_file_or_sets_them"],
    ),
    (
        "app --mode ignored",
        "services/applier.py",
        "        if o.mode is not None:\n            mode = o.mode",
        "        if False:\n            mode = o.mode",
        [S + "test_config_services.py::test_app_keeps_the_mode_and_owner_of_the_file_or_sets_them"],
    ),
    (
        "app --owner ignored",
        "services/applier.py",
        "        if o.uid is not None or o.gid is not None:  # --owner: always (a failure fails the apply)",
        "        if False:",
        [S + "test_config_services.py::test_app_keeps_the_mode_and_owner_of_the_file_or_sets_them"],
    ),
    (
        "config publish CLI publishes empty data",
        "services/config_cmd.py",
        "        if not data.strip() and not args.allow_empty:",
        "        if False:",
        [S + "test_config_services.py::test_trigger_and_config_commands"],
    ),
    (
        "the wheel installs a top-level services package",
        "pyproject.toml",
        '    "aiocoord._cli",\n]',
        '    "aiocoord._cli",\n    "services",\n]',
        ["tests/test_packaging.py"],
    ),
    (
        "one-shot commands wait the session timeout to connect",
        "services/common.py",
        "        default=ONE_SHOT_CONNECT_TIMEOUT if one_shot else None,",
        "        default=None,",
        [S + "test_cli.py::test_one_shot_commands_fail_fast_naming_the_hosts"],
    ),
    (
        "term cleanup not shielded",
        "aiocoord/recipes/election.py",
        "            with anyio.CancelScope(shield=True):\n                with (\n                    contextlib.suppress(CoordError),",
        "            with anyio.CancelScope():\n                with (\n                    contextlib.suppress(CoordError),",
        [
            "tests/review/test_review13_election.py::test_leader_cancelled_from_outside_leaves_no_candidate"
        ],
    ),
    (
        "deregister deletes another session's node",
        "aiocoord/recipes/discovery.py",
        "                ours = held == self._client.session_id",
        "                ours = True",
        [
            "tests/review/test_review13_owed.py::test_deregistering_after_a_lost_session_spares_the_name_another_session_holds"
        ],
    ),
    (
        "created node not forgiven as its reply arrives",
        "aiocoord/transport/session.py",
        "        if self.owed:\n            self._forgive_created(req, result)",
        "        if False:\n            self._forgive_created(req, result)",
        [
            "tests/review/test_review13_owed.py::test_a_stale_owed_delete_spares_a_sequential_node_created_again_under_its_name"
        ],
    ),
    (
        "run() loses the cause of main's exception",
        "aiocoord/_run.py",
        "                    exc.__cause__, exc.__context__, exc.__suppress_context__ = chain",
        "                    pass",
        ["tests/review/test_review13_run.py"],
    ),
    (
        "completion not fenced on the status version",
        "aiocoord/recipes/tasks.py",
        '                Op.set_data(status, b"done", claim.status_version),',
        '                Op.set_data(status, b"done"),',
        [
            R
            + "test_tasks.py::test_stale_worker_cannot_complete_a_task_moved_to_a_replacement_of_its_id"
        ],
    ),
    (
        "assignment older than its status run",
        "aiocoord/recipes/tasks.py",
        "                if status.mzxid != claim.assigned_at:\n",
        "                if False:\n",
        [R + "test_tasks.py::test_an_assignment_older_than_its_status_is_not_run"],
    ),
    (
        "worker reads not retried after session loss",
        "aiocoord/recipes/tasks.py",
        "            except RETRYABLE:\n                await client.wait_connected()\n        return None  # taken on a session that ended",
        "            except NotEmpty:\n                await client.wait_connected()\n        return None  # taken on a session that ended",
        [
            R
            + "test_tasks_faults.py::test_a_payload_read_unanswered_when_the_session_expires_is_retried_on_the_next",
            R + "test_tasks.py::test_worker_survives_repeated_session_expiry_while_tasks_flow",
        ],
    ),
    (
        "LOST does not cancel runs",
        "aiocoord/recipes/tasks.py",
        "            for claim in self._running.values():\n                claim.scope.cancel()\n            self._changed.set()",
        "            self._changed.set()",
        [
            R
            + "test_tasks.py::test_a_started_task_lost_with_its_worker_is_charged_and_its_run_cancelled"
        ],
    ),
    (
        "start not marked",
        "aiocoord/recipes/tasks.py",
        "                    await client.set(assignment, claim.made_for, 0)",
        "                    pass",
        [
            R
            + "test_tasks.py::test_a_started_task_lost_with_its_worker_is_charged_and_its_run_cancelled"
        ],
    ),
    (
        "never-started task charged",
        "aiocoord/recipes/tasks.py",
        "                    reason = None  # its worker never started it: not a failed attempt",
        "                    pass",
        [R + "test_tasks.py::test_a_task_its_lost_worker_never_started_moves_without_a_charge"],
    ),
    (
        "departed directories kept",
        "aiocoord/recipes/tasks.py",
        "                await self._remove_departed()\n",
        "",
        [R + "test_tasks.py::test_directory_of_a_departed_worker_is_removed"],
    ),
    (
        "refused completion leaves the assignment",
        "aiocoord/recipes/tasks.py",
        "                if exc.index >= 2 and error is None:",
        "                if False:",
        [R + "test_tasks.py::test_a_completion_refused_for_another_reason_fails_the_attempt"],
    ),
    (
        "stop hands back a task whose thread runs",
        "aiocoord/recipes/tasks.py",
        "            # a task is handed back only once its run ended: else it would run twice at once\n            await self._wait_runs()\n",
        "            pass\n",
        [R + "test_tasks.py::test_graceful_stop_does_not_hand_back_a_task_whose_thread_still_runs"],
    ),
    (
        "no retry delay",
        "aiocoord/recipes/tasks.py",
        "        if _until_due(redo, now) > 0:  # a failed task waits for its retry delay",
        "        if False:",
        [
            R + "test_dispatch_planning.py::test_a_failed_task_waits_for_its_retry_delay",
            R + "test_tasks.py::test_failed_tasks_are_retried_after_a_growing_delay",
        ],
    ),
    (
        "stop marks or deletes a replacement's node",
        "aiocoord/recipes/tasks.py",
        "        if stat is None or stat.ephemeral_owner != self._client.session_id:",
        "        if stat is None:",
        [
            R
            + "test_tasks.py::test_stale_worker_cannot_complete_a_task_moved_to_a_replacement_of_its_id[the stale worker stops]"
        ],
    ),
    (
        "stop returns a replacement's task",
        "aiocoord/recipes/tasks.py",
        '                    if data.decode(errors="replace") not in ("", mine):\n                        continue  # made for another registration of our id',
        "                    if False:\n                        continue  # made for another registration of our id",
        [
            R
            + "test_tasks.py::test_stale_worker_cannot_complete_a_task_moved_to_a_replacement_of_its_id[the stale worker stops]"
        ],
    ),
    (
        "stop does not end a registration wait",
        "aiocoord/recipes/tasks.py",
        "        self._follow_scope.cancel()  # also a registration waiting for our id to be free\n",
        "",
        [
            R
            + "test_tasks.py::test_stale_worker_cannot_complete_a_task_moved_to_a_replacement_of_its_id[the stale worker stops]"
        ],
    ),
    (
        "resign delete not owed",
        "aiocoord/recipes/tasks.py",
        "            if await client.delete_ephemeral(self._paths.master, only_ours=True):",
        "            if not await client.delete(self._paths.master):",
        [
            R
            + "test_tasks_faults.py::test_a_dispatcher_resign_lost_in_a_blip_is_done_after_the_reconnect"
        ],
    ),
    (
        "deregistration delete not owed",
        "aiocoord/recipes/tasks.py",
        "                await self._client.delete_ephemeral(self.path, only_ours=True)",
        "                await self._client.delete(self.path)",
        [
            R
            + "test_tasks_faults.py::test_a_worker_deregistration_lost_in_a_blip_is_done_after_the_reconnect"
        ],
    ),
    (
        "placement past capacity",
        "aiocoord/recipes/tasks.py",
        "        if left[worker] <= 0:",
        "        if left[worker] < -5:",
        [R + "test_dispatch_planning.py::test_each_worker_takes_at_most_its_free_capacity"],
    ),
    (
        "placement to the least free",
        "aiocoord/recipes/tasks.py",
        "        worker = max(left, key=left.__getitem__)",
        "        worker = min(left, key=left.__getitem__)",
        [
            R
            + "test_dispatch_planning.py::test_tasks_go_to_the_freest_worker_first_and_ties_in_order"
        ],
    ),
    (
        "out-of-attempts task retried",
        "aiocoord/recipes/tasks.py",
        "        return redo.charged < max_attempts",
        "        return True",
        [R + "test_dispatch_planning.py::test_a_task_out_of_attempts_is_dead_without_a_worker"],
    ),
    (
        "loss not charged",
        "aiocoord/recipes/tasks.py",
        "        return self.failures + (self.reason is not None)",
        "        return self.failures",
        [R + "test_dispatch_planning.py::test_a_loss_is_recorded_and_charged_as_an_attempt"],
    ),
    (
        "refused move not read again",
        "aiocoord/recipes/tasks.py",
        "        if move is refused:",
        "        if False:",
        [R + "test_dispatch_planning.py::test_a_refused_batch_is_planned_again_in_order"],
    ),
    (
        "refused move forgets its loss",
        "aiocoord/recipes/tasks.py",
        "            reason = move.redo.reason if move.redo is not None else None",
        "            reason = None",
        [R + "test_dispatch_planning.py::test_a_refused_move_keeps_the_loss_it_records"],
    ),
    (
        "refused op index unbounded",
        "aiocoord/recipes/tasks.py",
        "        if offset <= index < offset + len(move.ops):",
        "        if index < offset + len(move.ops):",
        [R + "test_dispatch_planning.py::test_an_op_index_outside_the_batch_refuses_no_move"],
    ),
    (
        "LOST does not reach the worker",
        "aiocoord/recipes/tasks.py",
        "            with listening(self._client, self._on_session):",
        "            with contextlib.nullcontext():",
        [
            R
            + "test_tasks.py::test_a_started_task_lost_with_its_worker_is_charged_and_its_run_cancelled"
        ],
    ),
    (
        "config feed yields again a version it yielded, or an older one",
        "aiocoord/recipes/config/feed.py",
        "            if version is not None and (self.last is None or version.zxid > self.last.zxid):",
        "            if version is not None:",
        [R + "test_config.py::test_a_watcher_never_repeats_a_version_nor_goes_back"],
    ),
    (
        "config feed goes back to an older version",
        "aiocoord/recipes/config/feed.py",
        "version.zxid > self.last.zxid",
        "version.zxid != self.last.zxid",
        [R + "test_config.py::test_a_watcher_never_repeats_a_version_nor_goes_back"],
    ),
    (
        "publishes never prune",
        "aiocoord/recipes/config/store.py",
        "        if int(name[len(PREFIX) :]) % self._prune_every == 0 and not self._pruning:",
        "        if False:",
        [R + "test_config.py::test_old_versions_are_pruned_beyond_retention_by_the_publishes"],
    ),
    (
        "discovery changes() outlive the cache",
        "aiocoord/recipes/discovery.py",
        "    def _close(self) -> None:\n        self._emitted.close()",
        "    def _close(self) -> None:\n        pass",
        [R + "test_discovery.py::test_changes_end_with_the_discovery_block"],
    ),
    (
        "registration not renewed after LOST",
        "aiocoord/recipes/discovery.py",
        "            self._losses.publish(self._losses.value + 1)",
        "            pass",
        [R + "test_discovery.py::test_registrant_session_expiry_registers_again"],
    ),
    (
        "Latest waits though the value is newer",
        "aiocoord/recipes/_session.py",
        "            if self._value != seen:",
        "            if False:",
        [R + "test_session_primitives.py"],
    ),
    (
        "Latest waits on a spent event (busy loop)",
        "aiocoord/recipes/_session.py",
        "            if self._changed.is_set():  # by a publish this consumer has seen: wait for the next",
        "            if False:",
        [R + "test_session_primitives.py::test_a_publish_of_the_seen_value_wakes_nobody"],
    ),
    (
        "Latest close() ends nothing",
        "aiocoord/recipes/_session.py",
        "        while not self._closed:",
        "        while True:",
        [R + "test_session_primitives.py::test_close_ends_the_waits_newer_value_or_not"],
    ),
    (
        "no central report",
        "services/cli.py",
        "    except Exception as exc:\n        return report(args.prog, exc)\n",
        "",
        [
            S + "test_cli_contract.py::test_an_unreachable_zookeeper_is_one_line_exit_1",
        ],
    ),
    (
        "argparse multi-line usage errors",
        "services/common.py",
        '        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\\n")',
        "        super().error(message)",
        [
            S + "test_cli_contract.py::test_a_usage_error_is_one_line_exit_2_before_any_session",
        ],
    ),
    (
        "path not validated",
        "services/common.py",
        '               type=znode_path, metavar="PATH", help=help)',
        '               metavar="PATH", help=help)',
        [
            S
            + "test_cli_contract.py::test_a_usage_error_is_one_line_exit_2_before_any_session[bad path]",
        ],
    ),
    (
        "zk not validated",
        "services/common.py",
        '        type=zk_hosts,\n        default=os.environ.get("AIOCOORD_ZK"',
        '        default=os.environ.get("AIOCOORD_ZK"',
        [
            S
            + "test_cli_contract.py::test_a_usage_error_is_one_line_exit_2_before_any_session[bad --zk]",
        ],
    ),
    (
        "@file error not usage",
        "services/common.py",
        '            raise UsageError(f"cannot read {value}: {exc.strerror or exc}") from exc',
        "            raise",
        [
            S
            + "test_cli_contract.py::test_a_usage_error_is_one_line_exit_2_before_any_session[missing @file]",
        ],
    ),
    (
        "no port check",
        "aiocoord/testing/zookeeper.py",
        "        if port_in_use(self.client_port):\n            raise PortInUse",
        "        if False:\n            raise PortInUse",
        [
            S + "test_cli_contract.py::test_zk_start_refuses_a_taken_port",
            S + "test_cli_contract.py::test_the_launcher_refuses_a_taken_port",
        ],
    ),
    (
        "no identity check",
        "aiocoord/testing/zookeeper.py",
        "        if mode is None or not self.answers():",
        "        if mode is None:",
        [
            S + "test_cli_contract.py::test_the_launcher_trusts_only_its_own_server",
        ],
    ),
    (
        "one-shot not quiet",
        "services/common.py",
        '    if one_shot:\n        parser.set_defaults(default_log_level="WARNING")\n',
        "",
        [
            S
            + "test_cli_contract.py::test_log_level_anywhere_in_any_case_iso_timestamps_json_logs",
        ],
    ),
    (
        "log level case-sensitive",
        "services/common.py",
        "        type=str.upper,\n        choices=LOG_LEVELS,",
        "        choices=LOG_LEVELS,",
        [
            S
            + "test_cli_contract.py::test_log_level_anywhere_in_any_case_iso_timestamps_json_logs",
        ],
    ),
    (
        "log level only on leaves",
        "services/cli.py",
        "    for each in parsers(parser):\n        add_log_options(each)",
        "    for each in list(parsers(parser))[1:]:\n        add_log_options(each)",
        [
            S
            + "test_cli_contract.py::test_log_level_anywhere_in_any_case_iso_timestamps_json_logs",
        ],
    ),
    (
        "HH:MM:SS timestamps",
        "services/common.py",
        "        return _timestamp(record)",
        '        return super().formatTime(record, "%H:%M:%S")',
        [
            S
            + "test_cli_contract.py::test_log_level_anywhere_in_any_case_iso_timestamps_json_logs",
        ],
    ),
    (
        "aliases shown",
        "services/common.py",
        "        parser.add_argument(alias, dest=action.dest, help=argparse.SUPPRESS, **hidden)",
        '        parser.add_argument(alias, dest=action.dest, help="old", **hidden)',
        [
            S + "test_cli_contract.py::test_old_spellings_stay_as_hidden_aliases",
        ],
    ),
    (
        "publish --json ignored",
        "services/config_cmd.py",
        '            if args.json:\n                print_json({"version": name})\n            else:\n                print(name)',
        "            print(name)",
        [
            S + "test_cli_contract.py::test_json_outputs_parse",
        ],
    ),
    (
        "no argcomplete hook",
        "services/cli.py",
        "    argcomplete.autocomplete(parser)\n",
        "",
        [
            S + "test_cli_contract.py::test_shell_completion_comes_from_argcomplete",
        ],
    ),
    (
        "no debug traceback",
        "services/cli.py",
        '    log.debug("%s failed", prog, exc_info=exc)\n',
        "",
        [
            S + "test_cli_contract.py::test_debug_level_shows_the_traceback_then_the_line",
        ],
    ),
    (
        "raw rst help",
        "services/common.py",
        '.replace("``", "")',
        '.replace("`", "`")',
        [
            S + "test_cli_contract.py::test_help_explains_every_option",
        ],
    ),
    (
        "connect hint missing",
        "services/cli.py",
        '        return str(exc), "is ZooKeeper running there? --zk HOSTS or $AIOCOORD_ZK", 1',
        "        return str(exc), None, 1",
        [
            S + "test_cli_contract.py::test_an_unreachable_zookeeper_is_one_line_exit_1[tasks]",
        ],
    ),
    (
        "unknown version raw",
        "services/config_cmd.py",
        '            except aiocoord.NoNode as exc:\n                if args.action == "publish":',
        "            except aiocoord.NoNode as exc:\n                if True:",
        [
            S + "test_cli_contract.py::test_an_unknown_version_is_one_line_exit_1",
        ],
    ),
    (
        "dispatcher resign while suspended skipped",
        "aiocoord/recipes/tasks.py",
        "        if client.state is SessionState.SUSPENDED:  # the session may come back: owe it",
        "        if False:",
        [
            "tests/review/test_review_owed_suspended.py::test_a_dispatcher_cancelled_while_suspended_resigns_after_the_reconnect"
        ],
    ),
    (
        "worker stop while suspended skips deregistration",
        "aiocoord/recipes/tasks.py",
        "            if self._client.state is SessionState.SUSPENDED:  # the session may come back:",
        "            if False:",
        [
            "tests/review/test_review_owed_suspended.py::test_a_worker_stopped_while_suspended_deregisters_after_the_reconnect"
        ],
    ),
    (
        "delete_ephemeral waits for the reconnect",
        "aiocoord/transport/client.py",
        "        if session and self.state is SessionState.SUSPENDED:",
        "        if False:",
        [
            "tests/review/test_review_owed_suspended.py::test_a_registration_ended_while_suspended_is_deleted_after_the_reconnect"
        ],
    ),
    (
        "election herd: every candidate ahead watched",
        "aiocoord/recipes/election.py",
        "                ahead = order[: self.leaders] if rank == self.leaders else [order[rank - 1]]",
        "                ahead = order[:rank]",
        [R + "test_election.py::test_twenty_candidates_a_leader_kill_wakes_only_the_next"],
    ),
    (
        "election: the next candidate leads too",
        "aiocoord/recipes/election.py",
        "                if rank < self.leaders:\n                    term = await self._take(node, rank)",
        "                if rank <= self.leaders:\n                    term = await self._take(node, rank)",
        [R + "test_election.py::test_graceful_resign_hands_over_at_once"],
    ),
    (
        "chaos: two CMDs at once not checked",
        "chaos/workloads/election.py",
        "                if b.start >= a.end or a.runner == b.runner:",
        "                if True:",
        [C + "test_election_two_cmds_at_once_is_a_violation_unless_the_runner_was_paused"],
    ),
    (
        "chaos: a paused runner not excused",
        "chaos/workloads/election.py",
        "                if any(lo <= b.start and hi >= a.start for lo, hi in paused.get(a.runner, [])):",
        "                if False:",
        [C + "test_election_two_cmds_at_once_is_a_violation_unless_the_runner_was_paused"],
    ),
    (
        "chaos: deposed-term writes not checked",
        "chaos/history.py",
        "        if write[1] < highest[1]:",
        "        if False:",
        [
            C + "test_election_a_deposed_term_writing_or_a_token_going_back_is_a_violation",
            C + "test_lock_a_write_of_a_newer_hold_before_one_of_an_older_hold_is_two_holders",
        ],
    ),
    (
        "chaos: read-your-writes not checked",
        "chaos/workloads/session.py",
        '                if e["value"] < floor:',
        "                if False:",
        [C + "test_session_checker_finds"],
    ),
    (
        "chaos: duplicated protected creates not checked",
        "chaos/workloads/base.py",
        '        elif result == "info" and n > 1:',
        "        elif False:",
        [C + "test_session_checker_finds"],
    ),
    (
        "chaos: results of moved tasks not checked",
        "chaos/workloads/tasks.py",
        '                if lost and lost.group(1) == start["worker"] and start["t"] < when:',
        "                if False:",
        [C + "test_tasks_checker_finds_lost_duplicated_unfinished_and_stale_results"],
    ),
    (
        "chaos: config reload order not checked",
        "chaos/workloads/config.py",
        "                if number < last:",
        "                if False:",
        [C + "test_config_checker_finds_double_publishes_out_of_order_and_rejected_applies"],
    ),
    (
        "chaos: discovery bound not checked",
        "chaos/workloads/discovery.py",
        "            if late > bound:",
        "            if False:",
        [C + "test_discovery_an_instance_left_in_a_cache_past_the_bound_is_a_violation"],
    ),
    (
        "chaos: a watcher's disconnection not excused",
        "chaos/workloads/discovery.py",
        "            late = gone - start - away",
        "            late = gone - start",
        [C + "test_discovery_an_instance_left_in_a_cache_past_the_bound_is_a_violation"],
    ),
    (
        "chaos: schedule not seeded",
        "chaos/schedule.py",
        "    rng = random.Random(seed)",
        "    rng = random.Random()",
        [C + "test_the_same_seed_plans_the_same_faults_and_another_seed_others"],
    ),
    (
        "chaos: member faults overlap",
        "chaos/schedule.py",
        "            if t < member_busy:\n                continue",
        "            if False:\n                continue",
        [C + "test_a_plan_keeps_a_quorum_and_hits_targets_only_with_their_kinds"],
    ),
    (
        "chaos: leader elections not excused",
        "chaos/workloads/discovery.py",
        "                if lost <= start + away + bound and elected >= start:",
        "                if False:",
        [C + "test_discovery_a_leader_election_restarts_the_bound"],
    ),
    (
        "only_ours: a look cancelled in flight not owed",
        "aiocoord/transport/client.py",
        "            if only_ours:\n                stat = await self._session.submit(Exists(server_path, path, None, False))",
        "            if only_ours:\n                lost = False\n                stat = await self._session.submit(Exists(server_path, path, None, False))\n                lost = True",
        [T + "test_owed_deletes.py::test_only_ours_cancelled_during_its_look_owes_the_delete"],
    ),
    (
        "only_ours: the owner not checked",
        "aiocoord/transport/client.py",
        "                if stat is None or stat.ephemeral_owner != session:\n                    lost = False",
        "                if stat is None:\n                    lost = False",
        [T + "test_owed_deletes.py::test_only_ours_spares_another_sessions_node"],
    ),
    (
        "tasks cancel: no status-version guard",
        "aiocoord/recipes/tasks.py",
        'ops = [Op.set_data(paths.status(self.id), b"cancelled", stat.version)]',
        'ops = [Op.set_data(paths.status(self.id), b"cancelled", -1)]',
        [
            R
            + "test_task_admin.py::test_cancel_loses_to_a_completion_made_between_its_read_and_its_write"
        ],
    ),
    (
        "tasks requeue/purge: no status-version guard",
        "aiocoord/recipes/tasks.py",
        "        ops = [Op.delete(paths.status(self.id), stat.version)]",
        "        ops = [Op.delete(paths.status(self.id))]",
        [R + "test_task_admin.py::test_requeue_and_purge_do_not_apply_to_a_task_moved_meanwhile"],
    ),
    (
        "tasks: traceback paired with an older error",
        "aiocoord/recipes/tasks.py",
        "traceback_name = f\"traceback-{int(names[-1].removeprefix('error-')) + 1:010d}\"",
        "traceback_name = f\"traceback-{int(names[-1].removeprefix('error-')):010d}\"",
        [R + "test_task_admin.py::test_dead_tasks_carry_the_traceback_of_their_last_failure"],
    ),
    (
        "zk rm -r: --yes not required off a terminal",
        "services/znode.py",
        "        if not args.yes and not sys.stdin.isatty():",
        "        if False:",
        [S + "test_znode_cmd.py::test_usage_errors_before_a_session"],
    ),
    (
        "zk set: --version ignored",
        "services/znode.py",
        "    stat = await zk.set(args.path, data, args.version)",
        "    stat = await zk.set(args.path, data)",
        [S + "test_znode_cmd.py::test_bad_input_is_a_typed_one_line_error"],
    ),
    (
        "zk rm -r: the answer not read",
        "services/znode.py",
        '    return answer.strip().lower() in ("y", "yes")',
        "    return True",
        [S + "test_znode_cmd.py::test_recursive_rm_asks_on_a_terminal"],
    ),
    (
        "worker --handler: cwd not on sys.path",
        "services/tasks_cmd.py",
        "        sys.path.insert(0, os.getcwd())",
        "        pass",
        [S + "test_task_commands.py::test_result_cancel_dead_requeue_purge"],
    ),
    (
        "tasks TASK... not read as tasks status",
        "services/common.py",
        "            return [other, *args]",
        "            return args",
        [S + "test_task_commands.py::test_old_and_new_spellings_of_tasks"],
    ),
    (
        "trigger TLS: a non-loopback address without TLS",
        "aiocoord/recipes/config/trigger.py",
        "if not tls:",
        "if False:",
        [
            R
            + "test_trigger_tls.py::test_a_non_loopback_address_needs_tls_and_authenticated_clients"
        ],
    ),
    (
        "trigger TLS: neither a token nor client certificates",
        "aiocoord/recipes/config/trigger.py",
        "if not (has_token or client_certs):",
        "if False:",
        [R + "test_trigger_tls.py::test_a_server_refuses_to_listen_beyond_loopback_unprotected"],
    ),
    (
        "trigger TLS: client certificates assumed",
        "aiocoord/recipes/config/trigger.py",
        "client_certs=context is not None and context.verify_mode == ssl.CERT_REQUIRED,",
        "client_certs=True,",
        [R + "test_trigger_tls.py::test_a_server_refuses_to_listen_beyond_loopback_unprotected"],
    ),
    (
        "agent: an unprotected --listen allowed",
        "services/agent.py",
        "allow_insecure=args.allow_insecure_listen,",
        "allow_insecure=True,",
        [
            S
            + "test_trigger_tls_services.py::test_agent_refuses_an_unprotected_public_address_in_one_line"
        ],
    ),
    (
        "trigger TLS: no close_notify half-close",
        "aiocoord/recipes/config/_tls.py",
        "self._tls.unwrap()",
        "pass",
        [R + "test_trigger_tls.py::test_framed_and_legacy_requests_over_tls"],
    ),
    (
        "http check: redirects followed",
        "aiocoord/recipes/discovery.py",
        "verify=verify, follow_redirects=follow_redirects,",
        "verify=verify, follow_redirects=True,",
        [R + "test_http_checks.py::test_a_redirect_is_unhealthy_unless_followed"],
    ),
    (
        "http check: any status below 400",
        "aiocoord/recipes/discovery.py",
        "if response.status_code in expected:",
        "if response.status_code < 400:",
        [R + "test_http_checks.py::test_expected_statuses"],
    ),
    (
        "http check: status outside 100-599",
        "aiocoord/recipes/discovery.py",
        "if not 100 <= first <= last <= 599:",
        "if not first <= last:",
        [R + "test_http_checks.py::test_status_ranges_parse"],
    ),
    (
        "http check: https not verified",
        "aiocoord/recipes/discovery.py",
        "    if not insecure:\n        verify = ssl.create_default_context(cafile=ca)",
        "    if True:\n        verify = ssl.create_default_context(cafile=ca)",
        [R + "test_http_checks.py::test_https_verifies_the_server_against_a_ca_or_skips_when_told"],
    ),
    (
        "http check: options without an http check",
        "aiocoord/recipes/discovery.py",
        'if http_options and not spec.startswith(("http://", "https://")):',
        "if False:",
        [R + "test_http_checks.py::test_http_options_only_with_an_http_check"],
    ),
    (
        "healthz: always healthy",
        "services/metrics.py",
        'return state.live, f"session {state.value}"',
        'return True, f"session {state.value}"',
        [
            S
            + "test_health_endpoints.py::test_exposition_head_healthz_and_readyz_of_elect_through_a_paused_server"
        ],
    ),
    (
        "readyz: ready without a live session",
        "services/metrics.py",
        "if not live or self._readiness is None:",
        "if self._readiness is None:",
        [
            S
            + "test_health_endpoints.py::test_exposition_head_healthz_and_readyz_of_elect_through_a_paused_server"
        ],
    ),
    (
        "metrics: HEAD sends the body",
        "services/metrics.py",
        'await stream.send(head if method == b"HEAD" else head + body)',
        "await stream.send(head + body)",
        [
            S
            + "test_health_endpoints.py::test_exposition_head_healthz_and_readyz_of_elect_through_a_paused_server"
        ],
    ),
    (
        "metrics: other methods served",
        "services/metrics.py",
        'if method not in (b"GET", b"HEAD"):',
        "if False:",
        [S + "test_metrics_exposition.py::test_paths_and_methods"],
    ),
    (
        "metrics: integers in e-notation",
        "services/metrics.py",
        "    if value.is_integer():\n        return str(int(value))\n",
        "",
        [S + "test_metrics_exposition.py::test_large_counters_and_timestamps_render_exactly"],
    ),
    (
        "readyz: app ready without a version",
        "services/common.py",
        "if self._last is None or self._last[0] is None:",
        "if self._last is None:",
        [S + "test_health_endpoints.py::test_app_is_ready_once_a_version_is_in_place"],
    ),
    (
        "readyz: elect ready while not a candidate",
        "services/metrics.py",
        "if election.candidate_path is None:",
        "if False:",
        [S + "test_health_endpoints.py::test_elect_is_not_ready_while_it_waits_to_contend_again"],
    ),
    (
        "hostname verification on",
        "aiocoord/transport/security.py",
        "    ctx.check_hostname = verify_hostname\n",
        "    ctx.check_hostname = False\n",
        [
            T + "test_tls.py::test_server_name_is_checked",
            T + "test_tls.py::test_tls_context_names_the_file_that_does_not_load",
            S + "test_cli_security.py::test_options_and_environment",
        ],
    ),
    (
        "TLS handshake bounded by the attempt timeout",
        "aiocoord/transport/session.py",
        "                    await conn.start_tls(self.ssl, address.name)\n",
        "                    with anyio.CancelScope(shield=True):\n                        await conn.start_tls(self.ssl, address.name)\n",
        [T + "test_tls.py::test_tls_handshake_is_bounded_by_the_attempt_timeout"],
    ),
    (
        "a TLS failure is named as one",
        "aiocoord/transport/session.py",
        "            if tls_handshake:\n",
        "            if False:\n",
        [
            T + "test_tls.py::test_server_certificate_from_another_ca_is_refused",
            T + "test_tls.py::test_server_name_is_checked",
            T + "test_tls.py::test_client_certificate_required",
        ],
    ),
    (
        "SASL failure is terminal",
        "aiocoord/transport/session.py",
        "            self._error = exc\n            self._execute(machine.apply(AuthRefused(str(exc))))\n            return None\n",
        "            return None\n",
        [
            T + "test_sasl.py::test_wrong_password_is_terminal",
            T + "test_sasl.py::test_refused_on_reconnect_is_terminal",
        ],
    ),
    (
        "re-auth on reconnect",
        "aiocoord/transport/session.py",
        "                if timeout_ms > 0 and self.sasl is not None:\n",
        "                if timeout_ms > 0 and self.sasl is not None and sent_id == 0:\n",
        [
            T + "test_sasl.py::test_authenticated_again_after_a_reconnect",
            T + "test_sasl.py::test_refused_on_reconnect_is_terminal",
        ],
    ),
    (
        "password file validation: an empty first line",
        "services/common.py",
        "    if not password:\n        raise UsageError(",
        "    if False:\n        raise UsageError(",
        [S + "test_cli_security.py::test_password_file_empty"],
    ),
    (
        "password file validation: a user needs a password",
        "services/common.py",
        "    if password is None:\n        raise UsageError(",
        "    if False:\n        raise UsageError(",
        [S + "test_cli_security.py::test_sasl_user_without_password"],
    ),
    (
        "no password on the command line",
        "services/common.py",
        '    group.add_argument("--zk-sasl-password", action=_NoPasswordHere, help=argparse.SUPPRESS)\n',
        "",
        [S + "test_cli_security.py::test_no_password_on_the_command_line"],
    ),
    (
        "a TLS close is bounded, then aborted",
        "aiocoord/transport/connection.py",
        "        if not self.released.is_set():\n            self.transport.abort()\n",
        "        if not self.released.is_set():\n            pass\n",
        [T + "test_tls.py::test_close_is_bounded_when_the_server_is_silent"],
    ),
    (
        "a service gives up when ZooKeeper is unreachable at start",
        "services/common.py",
        "            if args.connect_timeout is not None:\n                raise",
        "            if True:\n                raise",
        [
            S
            + "test_service_start.py::test_a_service_started_while_zookeeper_is_unreachable_waits_for_it"
        ],
    ),
    (
        "pytest plugin: the uvloop hook always on",
        "aiocoord/testing/pytest_plugin.py",
        '    if config.getini("aiocoord_uvloop"):',
        "    if True:",
        [
            "tests/testing/test_pytest_plugin.py::test_a_run_that_uses_no_fixture_has_no_side_effects"
        ],
    ),
    (
        "pytest plugin: AIOCOORD_TEST_ZK ignored",
        "aiocoord/testing/pytest_plugin.py",
        '    existing = os.environ.get(EXISTING_SERVER_ENV, "").strip()',
        '    existing = ""',
        [
            "tests/testing/test_pytest_plugin.py::test_aiocoord_test_zk_points_the_fixtures_at_an_existing_server"
        ],
    ),
    (
        "docs: an unmarked block not run goes unreported",
        "tests/test_docs.py",
        "        if b.not_run is None and b not in run",
        "        if False",
        ["tests/test_docs.py::test_an_unmarked_block_that_cannot_run_is_reported"],
    ),
    (
        "demo: command lines not shown",
        "services/demo.py",
        "        show(*argv)",
        "        pass",
        [S + "test_cli.py::test_demo_runs_end_to_end"],
    ),
    (
        "demo: the first step left out of the summary",
        "services/demo.py",
        "    demo = Demo(hosts, ensemble, Services(hosts, logs), first_steps)",
        "    demo = Demo(hosts, ensemble, Services(hosts, logs))",
        [S + "test_cli.py::test_demo_runs_end_to_end"],
    ),
    (
        "lock: every waiter watches the first node",
        "aiocoord/recipes/lock.py",
        '                await self._wait_gone(f"{self.path}/{ahead}")',
        '                await self._wait_gone(f"{self.path}/{min(children, key=lambda c: c[-10:])}")',
        [R + "test_lock.py::test_fifo_handover_wakes_only_the_next_waiter"],
    ),
    (
        "lock: unprotected create",
        "aiocoord/recipes/lock.py",
        "                protected=True,",
        "                protected=False,",
        [R + "test_lock.py::test_a_lost_create_reply_leaves_no_orphan"],
    ),
    (
        "lock: no withdraw when cancelled waiting",
        "aiocoord/recipes/lock.py",
        "            with anyio.CancelScope(shield=True):\n                await self._withdraw()\n            self._busy = False",
        "            with anyio.CancelScope(shield=True):\n                pass\n            self._busy = False",
        [R + "test_lock.py::test_cancel_or_timeout_while_waiting_leaves_no_node"],
    ),
    (
        "fenced guard without its check",
        "aiocoord/recipes/_session.py",
        "[Op.check(self.path, self._version), *ops]",
        '[Op.check("/", -1), *ops]',
        [R + "test_lock.py::test_an_expired_holder_is_fenced_and_its_block_cancelled"],
    ),
    (
        "semaphore: max-leases not checked",
        "aiocoord/recipes/lock.py",
        "        if stored != self.max_leases:",
        "        if False:",
        [R + "test_lock.py::test_semaphore_leases_and_max_leases_check"],
    ),
    (
        "lock: a hold survives SUSPENDED",
        "aiocoord/recipes/lock.py",
        '            hold._end("session suspended")',
        "            pass",
        [R + "test_lock.py::test_a_suspended_holder_stops_and_releases"],
    ),
    (
        "rwlock: readers conflict only with writers' nodes missing",
        "aiocoord/recipes/lock.py",
        '    conflicts = ("__lock__", "__rlock__")',
        '    conflicts = ("__lock__",)',
        [R + "test_lock.py::test_readers_share_a_writer_excludes"],
    ),
    (
        "lock CLI: the hold's scope not kept",
        "aiocoord/recipes/lock.py",
        "                hold._scope = scope",
        "                hold._scope = None",
        [S + "test_lock_cmd.py::test_the_command_is_stopped_when_the_lock_is_lost"],
    ),
    (
        "lock: a deleted lock path fails its waiters",
        "aiocoord/recipes/lock.py",
        "                except NoNode:\n                    children = []",
        "                except NoNode:\n                    raise",
        [R + "test_lock.py::test_a_waiter_outlives_the_deletion_of_the_lock_path"],
    ),
    (
        "guard: no node check (a resumed paused holder)",
        "aiocoord/recipes/_session.py",
        "results = await self._client.multi([Op.check(self.path, self._version), *ops])",
        "results = [None, *await self._client.multi([*ops])]",
        [R + "test_lock.py::test_a_sigstopped_holder_past_its_timeout_is_fenced_when_it_resumes"],
    ),
    (
        "lock: a release reported as a loss",
        "aiocoord/recipes/_session.py",
        '        if self.lost is None:\n            self.lost = "released"\n        self._scope = None',
        "        self._scope = None",
        [R + "test_lock.py::test_layout_token_contenders_and_release"],
    ),
    (
        "wait_applied: a failed apply counted",
        "aiocoord/recipes/config/status.py",
        "    if not status.ok or status.version is None:",
        "    if status.version is None:",
        [R + "test_config.py::test_wait_applied_counts_hosts_on_the_version_or_a_newer_one"],
    ),
    (
        "wait_applied: a newer version not counted",
        "aiocoord/recipes/config/status.py",
        "    return mine >= wanted",
        "    return mine == wanted",
        [R + "test_config.py::test_wait_applied_counts_hosts_on_the_version_or_a_newer_one"],
    ),
    (
        "wait_applied: watches left behind",
        "aiocoord/recipes/config/status.py",
        "                            await client.remove_watch(path, wakeup.watch)",
        "                            pass",
        [R + "test_config.py::test_wait_applied_counts_hosts_on_the_version_or_a_newer_one"],
    ),
    (
        "--wait-applied: hosts behind not named",
        "services/config_cmd.py",
        "        for s in aiocoord.StatusBoard.behind(statuses, version)",
        "        for s in []",
        [
            S
            + "test_config_services.py::test_wait_applied_waits_for_the_hosts_and_names_those_behind"
        ],
    ),
    (
        "--wait-applied: trigger without --path",
        "services/config_cmd.py",
        "    if args.wait_applied is not None and args.path is None:",
        "    if False:",
        [
            S
            + "test_config_services.py::test_wait_applied_waits_for_the_hosts_and_names_those_behind"
        ],
    ),
    (
        "semaphore: its own lease counted against it",
        "aiocoord/recipes/lock.py",
        "                hold = await self._take(self._lease)\n                if hold is not None:",
        "                hold = None\n                if hold is not None:",
        [R + "test_lock.py::test_a_lost_lease_create_reply_leaves_one_lease"],
    ),
    (
        "rereads: no re-read after RECONNECTED",
        "aiocoord/recipes/_session.py",
        "        if event.state in (SessionState.RECONNECTED, SessionState.CONNECTED):\n            self._ask()",
        "        if event.state in (SessionState.CONNECTED,):\n            self._ask()",
        ["tests/recipes/test_watchers.py::test_reconnect_rereads_and_clears_stale"],
    ),
    (
        "rereads: no re-watch after LOST",
        "aiocoord/recipes/_session.py",
        "        if event.state in (SessionState.RECONNECTED, SessionState.CONNECTED):\n            self._ask()",
        "        if event.state in (SessionState.RECONNECTED,):\n            self._ask()",
        [
            "tests/recipes/test_watchers.py::test_server_side_expiry_rewatches_on_the_new_session",
            "tests/recipes/test_watchers.py::test_a_node_deleted_and_recreated_while_the_session_was_lost_is_seen",
        ],
    ),
    (
        "rereads: never stale",
        "aiocoord/recipes/_session.py",
        "            self.stale = True",
        "            pass",
        ["tests/recipes/test_watchers.py::test_reconnect_rereads_and_clears_stale"],
    ),
    (
        "rereads: watch left after the block",
        "aiocoord/recipes/_session.py",
        "            await self._client.remove_watch(self.path, self._on_watch)",
        "            pass",
        ["tests/recipes/test_watchers.py::test_cancelling_leaves_no_watch_behind"],
    ),
    (
        "node watch yields a state twice",
        "aiocoord/recipes/watchers.py",
        "            if self._last is None or self._last[0] != state:",
        "            if True:",
        ["tests/recipes/test_watchers.py::test_reconnect_rereads_and_clears_stale"],
    ),
    (
        "data watch misses a creation",
        "aiocoord/recipes/watchers.py",
        "            return await client.get(path, watch=watch)\n        except NoNode:\n            if await client.exists(path, watch=watch) is None:",
        "            return await client.get(path, watch=watch)\n        except NoNode:\n            if await client.exists(path) is None:",
        [
            "tests/recipes/test_watchers.py::test_data_watch_yields_each_state_and_none_while_missing"
        ],
    ),
    (
        "children watch loses a re-created parent",
        "aiocoord/recipes/watchers.py",
        "            return sorted(await client.children(path, watch=watch))\n        except NoNode:\n            if await client.exists(path, watch=watch) is None:",
        "            return sorted(await client.children(path, watch=watch))\n        except NoNode:\n            if await client.exists(path) is None:",
        [
            "tests/recipes/test_watchers.py::test_children_watch_yields_sorted_children_across_a_recreated_parent"
        ],
    ),
    (
        "tree cache: no resync after RECONNECTED",
        "aiocoord/recipes/cache.py",
        "        elif event.state in (SessionState.RECONNECTED, SessionState.CONNECTED):",
        "        elif event.state in (SessionState.CONNECTED,):",
        ["tests/recipes/test_cache.py::test_changes_made_while_the_connection_was_cut_converge"],
    ),
    (
        "tree cache: no resync after LOST",
        "aiocoord/recipes/cache.py",
        "        elif event.state in (SessionState.RECONNECTED, SessionState.CONNECTED):",
        "        elif event.state in (SessionState.RECONNECTED,):",
        [
            "tests/recipes/test_cache.py::test_server_side_expiry_then_the_mirror_converges",
            "tests/recipes/test_cache.py::test_changes_made_while_the_session_was_lost_converge",
        ],
    ),
    (
        "tree cache: never stale",
        "aiocoord/recipes/cache.py",
        "            self.stale = True\n            self._blips += 1",
        "            self._blips += 1",
        ["tests/recipes/test_cache.py::test_changes_made_while_the_connection_was_cut_converge"],
    ),
    (
        "tree cache: watches left after the block",
        "aiocoord/recipes/cache.py",
        "                    await self._unwatch()",
        "                    pass",
        ["tests/recipes/test_cache.py::test_leaving_the_block_leaves_no_watch_behind"],
    ),
    (
        "tree cache: events outlive the block",
        "aiocoord/recipes/cache.py",
        "            stack.callback(self._queued.close)\n",
        "",
        ["tests/recipes/test_cache.py::test_leaving_the_block_leaves_no_watch_behind"],
    ),
    (
        "tree cache: a waiting event is not coalesced",
        "aiocoord/recipes/cache.py",
        "        kept = coalesce(self._queue.get(path), TreeEvent(kind, path, data, stat))",
        "        kept = TreeEvent(kind, path, data, stat)",
        [
            "tests/recipes/test_cache.py::test_a_reader_behind_gets_one_event_per_node_saying_where_it_stands"
        ],
    ),
    (
        "tree cache: a deleted child stays mirrored",
        "aiocoord/recipes/cache.py",
        "        for name in sorted(node.children - current):\n            self._remove(join(path, name))",
        "        for name in sorted(node.children - current):\n            pass",
        ["tests/recipes/test_cache.py::test_changes_made_while_the_session_was_lost_converge"],
    ),
    (
        "tree cache: a missing root is not waited for",
        "aiocoord/recipes/cache.py",
        "            if path == self.path and await client.exists(path, watch=watch) is not None:",
        "            if path == self.path and await client.exists(path) is not None:",
        [
            "tests/recipes/test_cache.py::test_a_cache_of_a_missing_path_waits_for_it",
            "tests/recipes/test_cache.py::test_the_subtree_root_deleted_and_created_again",
        ],
    ),
    (
        "partitioner: locks released only once the user left the allocation",
        "aiocoord/recipes/partitioner.py",
        "            await allocation._done.wait()\n",
        "            pass\n",
        [
            "tests/recipes/test_partitioner.py::test_members_divide_the_set_and_no_item_is_ever_held_twice"
        ],
    ),
    (
        "partitioner: release every lock before allocating again",
        "aiocoord/recipes/partitioner.py",
        "                await self._release()",
        "                pass",
        [
            "tests/recipes/test_partitioner.py::test_members_divide_the_set_and_no_item_is_ever_held_twice"
        ],
    ),
    (
        "partitioner: a hold that ends revokes the allocation",
        "aiocoord/recipes/partitioner.py",
        "                hold._scope = scope  # a hold",
        "                pass  # a hold",
        [
            "tests/recipes/test_partitioner.py::test_a_suspended_member_gives_up_its_items_and_allocates_again"
        ],
    ),
    (
        "partitioner: a party change while waiting for locks gives them up",
        "aiocoord/recipes/partitioner.py",
        "            tg.start_soon(abort_on_change)",
        "            pass",
        [
            "tests/recipes/test_partitioner.py::test_a_party_change_while_waiting_for_locks_gives_them_up"
        ],
    ),
    (
        "party: join again after a lost session",
        "aiocoord/recipes/party.py",
        'log.warning("session lost: joining as %s again", self.path)\n                await self._hold()',
        'log.warning("session lost: joining as %s again", self.path)',
        ["tests/recipes/test_party.py::test_an_expired_member_joins_again"],
    ),
    (
        "party: leaving deletes the node at once",
        "aiocoord/recipes/party.py",
        "                    await membership._leave()",
        "                    pass",
        ["tests/recipes/test_party.py::test_party_layout_members_and_leave"],
    ),
    (
        "party: leave deletes only a node of ours",
        "aiocoord/recipes/party.py",
        "only_ours=not ours",
        "only_ours=False",
        ["tests/recipes/test_party.py::test_cancelled_while_joining_leaves_no_node"],
    ),
    (
        "party: only __party__ nodes are members",
        "aiocoord/recipes/party.py",
        "return self.marker is None or self.marker in name",
        "return True",
        ["tests/recipes/test_party.py::test_party_layout_members_and_leave"],
    ),
    (
        "counter: a lost write of unknown outcome is retried blindly",
        "aiocoord/recipes/counter.py",
        "                if outcome is LostWrite.UNKNOWN:",
        "                if False:",
        [
            "tests/recipes/test_counter.py::test_an_increment_whose_reply_is_lost_is_never_counted_twice"
        ],
    ),
    (
        "counter: an untouched node proves the write not applied",
        "aiocoord/recipes/counter.py",
        "    if now.version == written_at.version:\n        return LostWrite.NOT_APPLIED",
        "    if now.version == written_at.version:\n        return LostWrite.UNKNOWN",
        ["tests/recipes/test_counter.py::test_an_increment_whose_request_is_lost_is_made_again"],
    ),
    (
        "counter: another's data at the next version proves ours refused",
        "aiocoord/recipes/counter.py",
        "if now.version == written_at.version + 1 and now_data != data:",
        "if now.version == written_at.version + 1:",
        [
            "tests/recipes/test_counter.py::test_an_increment_whose_reply_is_lost_is_never_counted_twice"
        ],
    ),
    (
        "counter: a re-created node proves nothing",
        "aiocoord/recipes/counter.py",
        "if now is None or now.czxid != written_at.czxid:",
        "if now is None:",
        ["tests/recipes/test_counter.py::test_what_a_read_after_a_lost_write_proves"],
    ),
    (
        "counter: the write is made at the version read",
        "aiocoord/recipes/counter.py",
        "written = await client.set(self.path, data, stat.version)",
        "written = await client.set(self.path, data, -1)",
        ["tests/recipes/test_counter.py::test_concurrent_increments_count_exactly"],
    ),
    (
        "barrier: wait watches with exists(), leaving a watch on a gone node",
        "aiocoord/recipes/barrier.py",
        "                try:  # get, not exists: a missing node leaves no watch behind\n                    await client.get(self.path, watch=woken.watch)\n                except NoNode:\n                    return",
        "                if await client.exists(self.path, watch=woken.watch) is None:\n                    return",
        ["tests/recipes/test_barrier.py::test_barrier_holds_waiters_until_removed"],
    ),
    (
        "barrier: a cancelled wait removes its watch",
        "aiocoord/recipes/_session.py",
        "    finally:\n        for path in [paths] if isinstance(paths, str) else paths:\n            await unwatch(client, path, watcher or woken.watch)",
        "    finally:\n        pass",
        [
            "tests/recipes/test_barrier.py::test_barrier_wait_cancelled_leaves_no_watch",
            R + "test_lock.py::test_a_waiter_cancelled_or_timed_out_leaves_no_watch",
            R + "test_election.py::test_a_waiting_candidate_cancelled_leaves_no_watch",
        ],
    ),
    (
        "double barrier: a cancelled enter deletes the member's node",
        "aiocoord/recipes/barrier.py",
        "            await self._enter()\n        except BaseException:  # cancelled, timed out or failed while waiting: no node stays\n            await self._withdraw()",
        "            await self._enter()\n        except BaseException:  # cancelled, timed out or failed while waiting: no node stays\n            pass",
        [
            "tests/recipes/test_barrier.py::test_cancel_while_waiting_in_enter_or_leave_leaves_no_node",
            "tests/recipes/test_barrier.py::test_cancelled_while_disconnected_the_delete_is_owed",
        ],
    ),
    (
        "double barrier: a cancelled leave deletes the member's node",
        "aiocoord/recipes/barrier.py",
        "            await self._leave()\n        except BaseException:\n            await self._withdraw()",
        "            await self._leave()\n        except BaseException:\n            pass",
        [
            "tests/recipes/test_barrier.py::test_cancel_while_waiting_in_enter_or_leave_leaves_no_node"
        ],
    ),
    (
        "double barrier: ready made while waiting opens the barrier",
        "aiocoord/recipes/barrier.py",
        "        self._wakeups += 1\n        return opened",
        "        self._wakeups += 1\n        return False",
        [
            "tests/recipes/test_barrier.py::test_a_ready_made_and_deleted_at_once_still_opens_the_barrier"
        ],
    ),
    (
        "double barrier: the lowest member leaves last",
        "aiocoord/recipes/barrier.py",
        "if here and self.node_name < others[0]:",
        "if False:",
        ["tests/recipes/test_barrier.py::test_double_barrier_layout_enter_together_leave_together"],
    ),
    (
        "double barrier: a lost create reply's node is adopted",
        "aiocoord/recipes/barrier.py",
        "elif stat.ephemeral_owner != session:",
        "elif True:",
        ["tests/recipes/test_barrier.py::test_a_lost_create_reply_leaves_one_node"],
    ),
    (
        "double barrier: the member completing the count makes ready",
        "aiocoord/recipes/barrier.py",
        "if sum(1 for m in members if m != READY) >= self.num_clients:",
        "if sum(1 for m in members if m != READY) > self.num_clients:",
        ["tests/recipes/test_barrier.py::test_double_barrier_layout_enter_together_leave_together"],
    ),
    (
        "render zero-healthy guard",
        "services/render.py",
        "        if not s.allow_empty and not any(i.enabled for i in instances):",
        "        if False:",
        [
            "tests/services/test_render.py::test_nginx_upstream_follows_registrations_and_health_and_never_a_broken_file",
            "tests/services/test_render.py::test_once_renders_applies_and_fails_without_touching_the_file",
        ],
    ),
    (
        "render undefined is lax",
        "services/render.py",
        "        undefined=jinja2.StrictUndefined,",
        "        undefined=jinja2.Undefined,",
        [
            "tests/services/test_render.py::test_the_sandbox_refuses_escapes_and_typos",
            "tests/services/test_render.py::test_nginx_upstream_follows_registrations_and_health_and_never_a_broken_file",
        ],
    ),
    (
        "render without the sandbox",
        "services/render.py",
        "class _Sandbox(ImmutableSandboxedEnvironment):",
        "class _Sandbox(jinja2.Environment):",
        [
            "tests/services/test_render.py::test_the_sandbox_refuses_escapes_and_typos",
            "tests/services/test_render.py::test_an_escaping_template_never_writes_its_file",
        ],
    ),
    (
        "render sandbox not immutable",
        "services/render.py",
        "class _Sandbox(ImmutableSandboxedEnvironment):",
        "class _Sandbox(__import__('jinja2.sandbox').sandbox.SandboxedEnvironment):",
        ["tests/services/test_render.py::test_the_sandbox_refuses_escapes_and_typos"],
    ),
    (
        "render loader reads files",
        "services/render.py",
        "        loader=jinja2.DictLoader(dict(config.texts)),",
        '        loader=jinja2.ChoiceLoader([jinja2.DictLoader(dict(config.texts)), jinja2.FileSystemLoader("/")]),',
        ["tests/services/test_render.py::test_the_sandbox_refuses_escapes_and_typos"],
    ),
    (
        "render quiescence without max",
        "services/render.py",
        "        with anyio.move_on_at(min(last + wait.min, first + wait.max)) as quiet:",
        "        with anyio.move_on_at(last + wait.min) as quiet:",
        ["tests/services/test_render.py::test_quiesce_renders_after_max_while_changes_keep_coming"],
    ),
    (
        "render quiescence without min",
        "services/render.py",
        "        with anyio.move_on_at(min(last + wait.min, first + wait.max)) as quiet:",
        "        with anyio.move_on_at(last) as quiet:",
        ["tests/services/test_render.py::test_quiesce_renders_once_changes_stop_for_min"],
    ),
    (
        "render unknown keys ignored",
        "services/render.py",
        "        if self.raw:\n            raise ConfigFileError(",
        "        if False:\n            raise ConfigFileError(",
        [
            "tests/services/test_render.py::test_a_bad_config_file_is_one_line_naming_the_key_exit_2_before_any_session"
        ],
    ),
    (
        "render --once exits 0 on failure",
        "services/render.py",
        "    if errors:\n        raise CommandError(",
        "    if False:\n        raise CommandError(",
        [
            "tests/services/test_render.py::test_once_renders_applies_and_fails_without_touching_the_file"
        ],
    ),
    (
        "render --dry-run applies",
        "services/render.py",
        "_dry_run if args.dry_run else _once",
        "_once",
        ["tests/services/test_render.py::test_dry_run_prints_the_diff_and_changes_nothing"],
    ),
    (
        "render --dry-run writes no diff",
        "services/render.py",
        "        sys.stdout.writelines(",
        "        (lambda _: None)(",
        ["tests/services/test_render.py::test_dry_run_prints_the_diff_and_changes_nothing"],
    ),
    (
        "render retries a failed render on every change",
        "services/render.py",
        "        if version.name == self.failed:",
        "        if False:",
        [
            "tests/services/test_render.py::test_each_template_reports_its_own_status_and_a_failed_render_is_not_retried"
        ],
    ),
    (
        "render reports no status",
        "services/render.py",
        "        if self.reporter is not None:\n            await self.reporter.report(version, ok, error)",
        "        if False:\n            await self.reporter.report(version, ok, error)",
        [
            "tests/services/test_render.py::test_each_template_reports_its_own_status_and_a_failed_render_is_not_retried"
        ],
    ),
    (
        "render ready before anything is rendered",
        "services/render.py",
        "    if waiting:\n",
        "    if False:\n",
        ["tests/services/test_render.py::test_render_is_ready_once_every_file_holds_a_render"],
    ),
    (
        "render status not written again after a lost session",
        "services/render.py",
        "                tg.start_soon(each.reporter.keep)  # written again on a new session",
        "                pass",
        [
            "tests/services/test_render.py::test_after_a_lost_session_the_file_follows_and_the_status_is_written_again"
        ],
    ),
    (
        "render mode ignored",
        "services/render.py",
        '            f"{mode:o}" if isinstance(mode, int) else mode,',
        "            None,",
        ["tests/services/test_render.py::test_once_gives_the_file_the_configured_mode"],
    ),
    (
        "render exposes the whole environment",
        "services/render.py",
        '        "env": {name: environ[name] for name in spec.env if name in environ},',
        '        "env": dict(environ),',
        [
            "tests/services/test_render.py::test_a_template_reads_only_the_environment_variables_it_names"
        ],
    ),
    (
        "semaphore: a lease made without the gate (on a later session)",
        "aiocoord/recipes/lock.py",
        "                await gate_hold.guard([op])",
        '                await __import__("aiocoord.recipes._session", fromlist=["_"]).hold_ephemeral(client, self._lease, op.data, log=log)',
        [
            R
            + "test_lock.py::test_a_partition_past_the_timeout_during_a_lease_create_makes_no_second_holder"
        ],
    ),
    (
        "tree cache: a new node joins an old parent",
        "aiocoord/recipes/cache.py",
        "            if up is None or up.czxid != mirrored.stat.czxid:",
        "            if False:",
        [
            R
            + "test_cache.py::test_a_parent_and_child_made_again_are_never_reported_removed_while_they_live"
        ],
    ),
    (
        "apply: no copy of an unverified file in place (kill -9 during the check)",
        "services/applier.py",
        "            if previous is not None and previous_stat is not None:\n                await anyio.to_thread.run_sync(\n                    _write_synced,\n                    self.backup,",
        "            if previous is not None and previous_stat is not None and self.verified is not None and self.verified.sha256 == _sha256(previous):\n                await anyio.to_thread.run_sync(\n                    _write_synced,\n                    self.backup,",
        [
            "tests/review/test_review18_apply.py::test_kill_9_during_check_over_an_unrecorded_working_file_leaves_the_broken_one"
        ],
    ),
    (
        "apply: no note of an absent file (kill -9 during the check)",
        "services/applier.py",
        "            elif self.absent.exists() and current is not None:",
        "            elif False:",
        [
            "tests/review/test_review18_apply.py::test_kill_9_during_check_over_an_unrecorded_working_file_leaves_the_broken_one"
        ],
    ),
    (
        "apply: {file} not quoted for the shell",
        "services/applier.py",
        'check = commands.check.replace("{file}", shlex.quote(str(tmp)))',
        'check = commands.check.replace("{file}", str(tmp))',
        [
            "tests/review/test_review18_toml.py::test_a_check_with_file_works_for_a_destination_with_a_space"
        ],
    ),
    (
        "status: ok not strictly a boolean",
        "aiocoord/recipes/config/status.py",
        "        if not isinstance(ok, bool):",
        "        if False:",
        [
            "tests/review/test_review18_wait.py::test_a_status_with_ok_false_as_a_string_is_not_counted_as_applied"
        ],
    ),
    (
        "status: version not checked to be a string",
        "aiocoord/recipes/config/status.py",
        "        if not (version is None or isinstance(version, str)):",
        "        if False:",
        [
            "tests/review/test_review18_wait.py::test_a_status_whose_version_is_not_a_string_does_not_crash_the_wait"
        ],
    ),
    (
        "discovery: enabled not strictly a boolean",
        "aiocoord/recipes/discovery.py",
        "    if not isinstance(raw, bool):",
        "    if False:",
        [
            "tests/review/test_review18_inputs.py::test_an_instance_disabled_as_the_string_false_is_not_rendered"
        ],
    ),
    (
        "render: a host name no status node can have",
        "services/render.py",
        '    if host in ("", ".", "..") or "/" in host or "\\0" in host:',
        '    if host in ("",) or "/" in host:',
        [
            "tests/review/test_review18_toml.py::test_a_host_name_zookeeper_cannot_hold_is_a_one_line_error_before_any_session"
        ],
    ),
    (
        "render: destinations compared as written",
        "services/render.py",
        "    destination = destination.parent.resolve() / destination.name",
        "    pass",
        [
            "tests/review/test_review18_toml.py::test_two_templates_writing_one_file_through_dot_dot_are_refused"
        ],
    ),
    (
        "render: a NUL in a command",
        "services/render.py",
        '        if isinstance(value, str) and "\\0" in value:',
        "        if False:",
        [
            "tests/review/test_review18_toml.py::test_a_nul_in_a_command_or_source_is_a_one_line_error_naming_the_key"
        ],
    ),
    (
        "render: a render not bounded in time (a template looping for ever)",
        "services/render.py",
        "        return await render_bounded(self.environment, self.spec, context, self.render_timeout)",
        "        return render(self.environment, self.spec, context)",
        [
            "tests/review/test_review18_sandbox.py::test_once_with_a_template_that_loops_for_ever_fails"
        ],
    ),
    (
        "render: powers not bounded",
        "services/render.py",
        '        if operator == "**" and _too_large_power(left, right):',
        "        if False:",
        [
            "tests/review/test_review18_sandbox.py::test_huge_powers_and_repeats_are_refused_not_computed"
        ],
    ),
    (
        "render: repeats not bounded",
        "services/render.py",
        '        if operator == "*" and (_too_long(left, right) or _too_long(right, left)):',
        "        if False:",
        [
            "tests/review/test_review18_sandbox.py::test_huge_powers_and_repeats_are_refused_not_computed"
        ],
    ),
    (
        "semaphore: a cancelled waiter leaves its watch on the leases",
        "aiocoord/recipes/lock.py",
        "            await wait_watched(client, self.path, changed)  # (no watch left when cancelled)",
        "            await changed.wait()",
        [R + "test_lock.py::test_a_semaphore_waiter_cancelled_or_timed_out_leaves_no_node"],
    ),
    (
        "a watching read given up in flight leaves its server watch",
        "aiocoord/transport/session.py",
        '                self._drop_unneeded(req.path or "/", reg_kind)',
        "                pass",
        [
            T
            + "test_wire_rules.py::test_a_watching_read_given_up_in_flight_leaves_no_watch_on_the_server"
        ],
    ),
    (
        "a given-up read's watch removed though a watcher needs it",
        "aiocoord/transport/watches.py",
        "        if self.unneeded(kind, path):\n            return True",
        "        if True:\n            return True",
        [
            T
            + "test_wire_rules.py::test_a_watching_read_given_up_in_flight_leaves_no_watch_on_the_server"
        ],
    ),
    (
        "a timed-out watching read is taken out of flight (its late reply cannot settle the watch)",
        "aiocoord/transport/connection.py",
        "            if req.watch is None:\n                del pending[xid]",
        "            if True:\n                del pending[xid]",
        [
            "tests/review/test_review19_watches.py::test_a_watching_read_that_timed_out_leaves_no_watch_on_the_server"
        ],
    ),
    (
        "a persistent watch kept for a covered one-shot stays after that fired",
        "aiocoord/transport/session.py",
        "            for kind in self.watches.released(event.path):",
        "            for kind in ():",
        [
            "tests/review/test_review19_watches.py::test_a_cancelled_persistent_watch_kept_for_a_one_shot_goes_once_that_fires",
            "tests/review/test_review19_watches.py::test_a_removed_persistent_watch_kept_for_a_one_shot_goes_once_that_fires",
        ],
    ),
    (
        "a persistent watch no callback has is not kept for what it covers",
        "aiocoord/transport/watches.py",
        "        if kind in _COVERS and not self.has(kind, path):\n            self._kept.add((kind, path))",
        "        if False:\n            self._kept.add((kind, path))",
        [
            "tests/review/test_review19_watches.py::test_a_removed_persistent_watch_kept_for_a_one_shot_goes_once_that_fires"
        ],
    ),
    (
        "remove_watch does not offer the kept watches of the path",
        "aiocoord/transport/watches.py",
        "        return {kind for kind in emptied if self.release(kind, path)} | set(self.released(path))",
        "        return {kind for kind in emptied if self.release(kind, path)}",
        [
            "tests/review/test_review19_watches.py::test_a_cancelled_recursive_watch_kept_for_another_watch_goes_with_it"
        ],
    ),
    (
        "a refused persistent removal is not kept for later",
        "aiocoord/transport/session.py",
        "            self.watches.keep(kind, path)",
        "            pass",
        [
            "tests/review/test_review19_watches.py::test_a_cancelled_recursive_watch_kept_for_another_watch_goes_with_it"
        ],
    ),
    (
        "chaos semaphore: more leases than allowed not seen",
        "chaos/workloads/locks.py",
        "            if count > self.leases:",
        "            if False:",
        [C + "test_semaphore_more_leases_than_allowed_at_one_zxid_is_a_violation"],
    ),
    (
        "chaos lock: no liveness check",
        "chaos/workloads/locks.py",
        '        if final is None or last_ok < final["checked_at"] - LIVENESS:',
        "        if False:",
        [C + "test_lock_without_a_guarded_write_at_the_end_is_a_violation"],
    ),
    (
        "chaos counter: a lost or doubled increment not seen",
        "chaos/workloads/counter.py",
        "        if not acknowledged <= final <= acknowledged + unknown:",
        "        if False:",
        [C + "test_counter_the_value_lies_between_the_acknowledged_and_the_unknown_increments"],
    ),
    (
        "chaos counter: two acks leaving one value not seen",
        "chaos/workloads/counter.py",
        "            if n > 1:",
        "            if False:",
        [C + "test_counter_the_value_lies_between_the_acknowledged_and_the_unknown_increments"],
    ),
    (
        "status: a write lost in a blip is not written again when the session is back",
        "services/common.py",
        "                if event.state in (aiocoord.SessionState.CONNECTED,\n                                   aiocoord.SessionState.RECONNECTED):  # fmt: skip",
        "                if event.state in (aiocoord.SessionState.CONNECTED,):  # fmt: skip",
        [S + "test_status_reporter.py"],
    ),
    (
        "status: not written again on a new session",
        "services/common.py",
        "            if last is None or self._written == (last, session):",
        "            if last is None or self._written is not None and self._written[0] == last:",
        [
            S
            + "test_render.py::test_after_a_lost_session_the_file_follows_and_the_status_is_written_again"
        ],
    ),
    (
        "semaphore: one lease name for every hold (an ended hold's guard passes on a new lease)",
        "aiocoord/recipes/lock.py",
        '        self._lease = f"{self.path}/{uuid.uuid4().hex}"\n        while True:',
        '        self._lease = self._lease or f"{self.path}/{uuid.uuid4().hex}"\n        while True:',
        [
            "tests/review/test_review20_fencing.py::test_a_released_semaphore_lease_cannot_write_once_its_semaphore_holds_again",
            "tests/review/test_review20_fencing.py::test_a_semaphore_lease_lost_with_its_session_cannot_write_once_held_again",
        ],
    ),
    (
        "status: a failed write still counted as what the node holds",
        "services/common.py",
        "                # applied or not: what the node holds is not known any more\n                self._written = None",
        "                # applied or not: what the node holds is not known any more\n                pass",
        ["tests/review/test_review20_status.py"],
    ),
    (
        "chaos counter: a value below an acknowledged post value not seen",
        "chaos/workloads/counter.py",
        "        if left and final < max(left):",
        "        if False:",
        [
            "tests/review/test_review20_checkers.py::test_counter_a_final_value_below_an_acknowledged_post_value_is_a_violation"
        ],
    ),
    (
        "proxy: the server closed with accepted connections not yet made transports (their sockets leak)",
        "aiocoord/testing/faults.py",
        "                for sock in self._server.sockets:\n                    loop.remove_reader(sock.fileno())\n                await asyncio.sleep(0)\n                await asyncio.sleep(0)\n",
        "",
        ["tests/testing/test_proxy.py"],
    ),
]


def main() -> int:
    import os
    import pathlib
    import shutil
    import subprocess
    import sys
    import tempfile

    top = pathlib.Path(__file__).resolve().parent.parent
    python = os.environ.get("PYTHON", str(top / ".venv/bin/python"))
    only = sys.argv[1:]
    survivors = 0
    with tempfile.TemporaryDirectory(prefix="aiocoord-mutate-") as tmp:
        work = pathlib.Path(tmp) / "tree"
        shutil.copytree(top, work, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__"))
        env = {**os.environ, "PYTHONPATH": str(work)}
        for name, path, old, new, tests in M:
            if only and not any(o in name for o in only):
                continue
            target = work / path
            src = target.read_text()
            if src.count(old) != 1:
                print(f"STALE    {name}: the code to mutate is not found once in {path}")
                survivors += 1
                continue
            target.write_text(src.replace(old, new))
            try:
                run = subprocess.run(
                    [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
            finally:
                target.write_text(src)
            failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
            if run.returncode:
                print(f"KILLED   {name}: {failed[0] if failed else 'tests failed'}", flush=True)
            else:
                survivors += 1
                print(f"SURVIVED {name}", flush=True)
    print(f"{survivors} survived")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
