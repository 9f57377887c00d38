%% @private
%% synod_nif: the one module that loads priv/synod_nif.so. Every function here
%% is replaced by C on load; the Erlang bodies only run if loading failed.
%% Public callers use synod_ring (Erlang) or Synod.Ring (Elixir), never this.
-module(synod_nif).

-export([ring_new/3, ring_lookup/2, ring_owners/3, ring_lookup_many/3, ring_diff/4, ring_info/1,
         fsync_dir/1]).
-export([raft_new/1, raft_tick/1, raft_step/2, raft_propose/2, raft_conf_change/3,
         raft_read_index/2, raft_control/3, raft_compact/4, raft_snapshot_received/4, raft_chunk_encode/2, raft_ready/1, raft_status/1, raft_quiesced/1, raft_persisted/2, raft_seed/0]).
-export([store_new/1, store_apply/2, store_range/2, store_events_since/3, store_leases/1,
         store_lease/2, store_info/1, store_snapshot/1, store_restore/1,
         store_snapshot_open/1, store_snapshot_next/2, store_snapshot_close/1,
         store_restore_open/1, store_restore_feed/2, store_restore_finish/1]).

-on_load(init/0).

%% Must equal SYNOD_NIF_VERSION in c_src/synod_nif.c: a stale .so refuses to load.
-define(NIF_VERSION, 4).

init() ->
    Path = filename:join(priv_dir(), "synod_nif"),
    case erlang:load_nif(Path, ?NIF_VERSION) of
        ok -> ok;
        {error, {Reason, Text}} -> {error, {Reason, "synod_nif: " ++ Text ++ " (" ++ Path ++ ")"}}
    end.

priv_dir() ->
    case code:priv_dir(synod) of
        {error, bad_name} ->
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Dir ->
            Dir
    end.

-define(NOT_LOADED, erlang:nif_error({not_loaded, ?MODULE})).

ring_new(_Members, _Vnodes, _Seed) -> ?NOT_LOADED.
ring_lookup(_Ring, _Key) -> ?NOT_LOADED.
ring_owners(_Ring, _Key, _N) -> ?NOT_LOADED.
ring_lookup_many(_Ring, _Keys, _Acc) -> ?NOT_LOADED.
ring_diff(_Old, _New, _Keys, _Acc) -> ?NOT_LOADED.
ring_info(_Ring) -> ?NOT_LOADED.
fsync_dir(_Path) -> ?NOT_LOADED.

%% Raft (c_src/synod_nif_raft.c; the driver is lib/synod/raft/member.ex).
raft_new(_Config) -> ?NOT_LOADED.
raft_tick(_Raft) -> ?NOT_LOADED.
raft_step(_Raft, _Msg) -> ?NOT_LOADED.
raft_propose(_Raft, _Data) -> ?NOT_LOADED.
raft_conf_change(_Raft, _Op, _Id) -> ?NOT_LOADED.
raft_read_index(_Raft, _Ctx) -> ?NOT_LOADED.
raft_control(_Raft, _Op, _Arg) -> ?NOT_LOADED.
raft_compact(_Raft, _Index, _Size, _Checksum) -> ?NOT_LOADED.
raft_snapshot_received(_Raft, _Index, _Term, _Ok) -> ?NOT_LOADED.
raft_chunk_encode(_Template, _Data) -> ?NOT_LOADED.
raft_ready(_Raft) -> ?NOT_LOADED.
raft_status(_Raft) -> ?NOT_LOADED.
raft_quiesced(_Raft) -> ?NOT_LOADED.
raft_persisted(_Raft, _Seq) -> ?NOT_LOADED.
raft_seed() -> ?NOT_LOADED.

%% Store (c_src/synod_nif_store.c; the machine is lib/synod/store/machine.ex).
store_new(_Opts) -> ?NOT_LOADED.
store_apply(_Store, _Command) -> ?NOT_LOADED.
store_range(_Store, _RangeCommand) -> ?NOT_LOADED.
store_events_since(_Store, _FromRevision, _Limit) -> ?NOT_LOADED.
store_leases(_Store) -> ?NOT_LOADED.
store_lease(_Store, _Id) -> ?NOT_LOADED.
store_info(_Store) -> ?NOT_LOADED.
store_snapshot(_Store) -> ?NOT_LOADED.
store_restore(_Snapshot) -> ?NOT_LOADED.
store_snapshot_open(_Store) -> ?NOT_LOADED.
store_snapshot_next(_Writer, _Target) -> ?NOT_LOADED.
store_snapshot_close(_Writer) -> ?NOT_LOADED.
store_restore_open(_Size) -> ?NOT_LOADED.
store_restore_feed(_Restorer, _Piece) -> ?NOT_LOADED.
store_restore_finish(_Restorer) -> ?NOT_LOADED.
