"""The summary table `make bench` prints, from results shaped as the suites return them."""

from vigil.bench.table import render, rows

CORE = {
    "exec_storm": {"exec_per_s_without": 2983, "exec_per_s_with": 2816, "ratio": 0.944},
    "syscall_cost": {"ns_per_call": {"none": {"getpid": 64.0, "openat": 470.0},
                                     "openat_policy": {"getpid": 70.0, "openat": 550.0}}},
    "pipeline_json": {"policy": {"events_per_cpu_second": 420_000},
                      "exec_exit": {"events_per_cpu_second": 66_000}},
    "rss_10k_live_processes": {"agent_rss_mb": {"VmRSS": 80.0, "cgroup_charged": 120.0}},
}
GRPC = {"transport_one_subscriber": {"events_per_s_per_subscriber": 150_000},
        "baseline_grpcio_server": {"msgs_per_s": 37_000}}


def test_every_headline_row_with_its_ratio() -> None:
    got = {m: (b, w, r) for m, b, w, r in rows({"core": CORE, "grpc": GRPC})}
    assert got["exec/s, fork+exec storm (baseline: no agent)"] == ("2,983", "2,816", "0.944")
    assert got["ns per openat+close, non-matching openat policy (baseline: no agent)"][2] \
        == f"{470 / 550:.3f}"
    assert got["policy events per agent CPU-second (target)"] == ("400,000", "420,000", "1.05")
    assert got["exec/exit events per agent CPU-second (target)"][2] == "1.10"
    assert got["gRPC events/s to one subscriber (baseline: grpcio server)"][2] == "4.05"
    assert got["agent VmRSS MB, 10k live processes (target)"] == ("64", "80.0", "0.80")


def test_suites_that_did_not_run_leave_their_rows_out() -> None:
    assert [r[0] for r in rows({"grpc": GRPC})] == [
        "gRPC events/s to one subscriber (baseline: grpcio server)"]
    assert render({}) == ""
    assert render({"core": CORE}).startswith("| measure | baseline | with Vigil | ratio |")
