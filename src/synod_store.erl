%% @doc The replicated, linearizable key-value store from Erlang: etcd's v3
%% model (revisions, leases, transactions, watches) on a Raft group.
%%
%% Thin: every function converts its arguments and calls `Synod.Store'
%% (`'Elixir.Synod.Store''), which decides everything; see its documentation
%% and docs/store.md. Keys are binaries of 1..4096 bytes, values binaries of
%% at most 1 MiB. Options are maps or proplists; every call takes `timeout'
%% (ms, default 5000), and `{error, timeout}' means the outcome is unknown.
%% Bad arguments raise `error({badarg, Message})'. A kv is a map
%% `#{key, value, create_revision, mod_revision, version, lease}'.
%%
%% ```
%% Nodes = ['a@127.0.0.1', 'b@127.0.0.1', 'c@127.0.0.1'],
%% ok = synod_store:start(cfg, Nodes, "/var/lib/myapp/store"),
%% {ok, Rev, undefined} = synod_store:put(cfg, <<"feature/x">>, <<"on">>),
%% {ok, #{value := <<"on">>, mod_revision := Rev}} = synod_store:get(cfg, <<"feature/x">>),
%% {ok, Lease, 10000} = synod_store:grant(cfg, 10000),
%% {ok, _, undefined} = synod_store:put(cfg, <<"workers/me">>, <<"busy">>, #{lease => Lease}),
%% {ok, Ref} = synod_store:watch(cfg, <<"workers/">>, [prefix]).
%% '''
-module(synod_store).

-export([child_spec/1, start_member/1, stop_member/1, start/3, start/4]).
-export([put/3, put/4, get/2, get/3, range/2, range/3, delete/2, delete/3, txn/3, txn/4,
         txn/5, revision/1, revision/2]).
-export([grant/2, grant/3, keep_alive/2, keep_alive/3, revoke/2, revoke/3, leases/1,
         leases/2]).
-export([watch/2, watch/3, unwatch/2]).

-export_type([store/0, kv/0]).

-define(STORE, 'Elixir.Synod.Store').

-type store() :: atom().
-type kv() :: #{key := binary(), value := binary(), create_revision := non_neg_integer(),
                mod_revision := non_neg_integer(), version := non_neg_integer(),
                lease := non_neg_integer()}.

%% -- members ------------------------------------------------------------------

%% @doc A child spec for this node's member of a store: the options of
%% `synod_raft:child_spec/1' but `machine', plus `store' (history limits,
%% the same on every member).
-spec child_spec(synod:options()) -> supervisor:child_spec().
child_spec(Opts) ->
    synod_opts:call(?STORE, child_spec, [synod_opts:member_keyword(Opts)]).

%% @doc Starts this node's member under Synod's own supervisor.
-spec start_member(synod:options()) -> {ok, pid()} | {error, term()}.
start_member(Opts) ->
    synod_opts:call(?STORE, start_member, [synod_opts:member_keyword(Opts)]).

%% @doc Stops this node's member of `Store'; its files stay.
-spec stop_member(store()) -> ok | {error, not_found}.
stop_member(Store) ->
    ?STORE:stop_member(Store).

%% @equiv start(Store, Nodes, DataRoot, [])
-spec start(store(), [node()], file:filename_all()) -> ok | {error, term()}.
start(Store, Nodes, DataRoot) ->
    start(Store, Nodes, DataRoot, []).

%% @doc Starts a member on every node of `Nodes' (the voters), each with its
%% data in `DataRoot/<node>'.
-spec start(store(), [node()], file:filename_all(), synod:options()) -> ok | {error, term()}.
start(Store, Nodes, DataRoot, Opts) ->
    synod_opts:call(?STORE, start, [Store, Nodes, DataRoot, synod_opts:keyword(Opts)]).

%% -- keys ---------------------------------------------------------------------

%% @equiv put(Store, Key, Value, [])
-spec put(store(), binary(), binary()) ->
    {ok, pos_integer(), kv() | undefined} | {error, term()}.
put(Store, Key, Value) ->
    put(Store, Key, Value, []).

%% @doc Puts `Value' under `Key': `{ok, Revision, Prev}', `Prev' the previous
%% kv with `prev_kv' (`undefined' without it or if there was none). Options:
%% `lease' (a granted lease id), `prev_kv', `timeout'.
-spec put(store(), binary(), binary(), synod:options()) ->
    {ok, pos_integer(), kv() | undefined} | {error, term()}.
put(Store, Key, Value, Opts) ->
    case synod_opts:call(?STORE, put, [Store, Key, Value, synod_opts:keyword(Opts)]) of
        {ok, Revision, Prev} -> {ok, Revision, synod_opts:undefined(Prev)};
        Error -> Error
    end.

%% @equiv get(Store, Key, [])
-spec get(store(), binary()) -> {ok, kv() | undefined} | {error, term()}.
get(Store, Key) ->
    get(Store, Key, []).

%% @doc The kv under `Key', or `undefined'. Options: `consistency'
%% (`linearizable', the default, or `stale'), `timeout'.
-spec get(store(), binary(), synod:options()) -> {ok, kv() | undefined} | {error, term()}.
get(Store, Key, Opts) ->
    case synod_opts:call(?STORE, get, [Store, Key, synod_opts:keyword(Opts)]) of
        {ok, KV} -> {ok, synod_opts:undefined(KV)};
        Error -> Error
    end.

%% @equiv range(Store, Key, [])
-spec range(store(), binary()) ->
    {ok, [kv()], non_neg_integer(), boolean()} | {error, term()}.
range(Store, Key) ->
    range(Store, Key, []).

%% @doc A range read: `Key' alone, `prefix', or `{range_end, End}' (a binary
%% or `end'); also `limit', `keys_only', `count_only', `consistency'.
%% Returns `{ok, KVs, Count, More}', KVs in key order.
-spec range(store(), binary(), synod:options()) ->
    {ok, [kv()], non_neg_integer(), boolean()} | {error, term()}.
range(Store, Key, Opts) ->
    synod_opts:call(?STORE, range, [Store, Key, synod_opts:keyword(Opts)]).

%% @equiv delete(Store, Key, [])
-spec delete(store(), binary()) ->
    {ok, pos_integer(), non_neg_integer(), [kv()]} | {error, term()}.
delete(Store, Key) ->
    delete(Store, Key, []).

%% @doc Deletes `Key' (or `prefix', `{range_end, End}'): `{ok, Revision,
%% Deleted, PrevKVs}', `PrevKVs' with `prev_kv'.
-spec delete(store(), binary(), synod:options()) ->
    {ok, pos_integer(), non_neg_integer(), [kv()]} | {error, term()}.
delete(Store, Key, Opts) ->
    synod_opts:call(?STORE, delete, [Store, Key, synod_opts:keyword(Opts)]).

%% @equiv txn(Store, Compares, Success, [], [])
-spec txn(store(), list(), list()) -> {ok, pos_integer(), boolean(), list()} | {error, term()}.
txn(Store, Compares, Success) ->
    txn(Store, Compares, Success, [], []).

%% @equiv txn(Store, Compares, Success, Failure, [])
-spec txn(store(), list(), list(), list()) ->
    {ok, pos_integer(), boolean(), list()} | {error, term()}.
txn(Store, Compares, Success, Failure) ->
    txn(Store, Compares, Success, Failure, []).

%% @doc If every compare holds, runs the `Success' ops, else the `Failure'
%% ops, atomically as one revision: `{ok, Revision, Succeeded, Results}'.
%% Compares: `{exists, Key}', `{absent, Key}', `{Target, Key, Op, Integer}'
%% with `Target' one of `version', `create_revision', `mod_revision',
%% `lease' and `Op' one of `==', `!=', `<', `>', and `{value, Key, Op,
%% Binary}'. Ops: `{put, Key, Value}', `{delete, Key}', `{range, Key}', each
%% also with a proplist of the options of put/4, delete/3, range/3.
-spec txn(store(), list(), list(), list(), synod:options()) ->
    {ok, pos_integer(), boolean(), list()} | {error, term()}.
txn(Store, Compares, Success, Failure, Opts) ->
    synod_opts:call(?STORE, txn, [Store, Compares, Success, Failure, synod_opts:keyword(Opts)]).

%% @equiv revision(Store, [])
-spec revision(store()) -> {ok, non_neg_integer()} | {error, term()}.
revision(Store) ->
    revision(Store, []).

%% @doc The store's current revision (linearizable).
-spec revision(store(), synod:options()) -> {ok, non_neg_integer()} | {error, term()}.
revision(Store, Opts) ->
    synod_opts:call(?STORE, revision, [Store, synod_opts:keyword(Opts)]).

%% -- leases -------------------------------------------------------------------

%% @equiv grant(Store, TtlMs, [])
-spec grant(store(), pos_integer()) -> {ok, pos_integer(), pos_integer()} | {error, term()}.
grant(Store, TtlMs) ->
    grant(Store, TtlMs, []).

%% @doc Grants a lease of `TtlMs' milliseconds: `{ok, LeaseId, TtlMs}'. Its
%% countdown runs on the leader's clock; when it passes, its keys go.
-spec grant(store(), pos_integer(), synod:options()) ->
    {ok, pos_integer(), pos_integer()} | {error, term()}.
grant(Store, TtlMs, Opts) ->
    synod_opts:call(?STORE, grant, [Store, TtlMs, synod_opts:keyword(Opts)]).

%% @equiv keep_alive(Store, LeaseId, [])
-spec keep_alive(store(), pos_integer()) -> {ok, pos_integer()} | {error, term()}.
keep_alive(Store, LeaseId) ->
    keep_alive(Store, LeaseId, []).

%% @doc Restarts a lease's countdown at its full TTL: `{ok, TtlMs}' once the
%% leader did so and a quorum confirmed it still leads, or
%% `{error, lease_not_found}'.
-spec keep_alive(store(), pos_integer(), synod:options()) ->
    {ok, pos_integer()} | {error, term()}.
keep_alive(Store, LeaseId, Opts) ->
    synod_opts:call(?STORE, keep_alive, [Store, LeaseId, synod_opts:keyword(Opts)]).

%% @equiv revoke(Store, LeaseId, [])
-spec revoke(store(), pos_integer()) -> {ok, pos_integer()} | {error, term()}.
revoke(Store, LeaseId) ->
    revoke(Store, LeaseId, []).

%% @doc Revokes a lease now, deleting its keys: `{ok, Revision}'.
-spec revoke(store(), pos_integer(), synod:options()) -> {ok, pos_integer()} | {error, term()}.
revoke(Store, LeaseId, Opts) ->
    synod_opts:call(?STORE, revoke, [Store, LeaseId, synod_opts:keyword(Opts)]).

%% @equiv leases(Store, [])
-spec leases(store()) -> {ok, [{pos_integer(), pos_integer(), [binary()]}]} | {error, term()}.
leases(Store) ->
    leases(Store, []).

%% @doc Every lease as `{Id, TtlMs, Keys}', in id order (linearizable).
-spec leases(store(), synod:options()) ->
    {ok, [{pos_integer(), pos_integer(), [binary()]}]} | {error, term()}.
leases(Store, Opts) ->
    synod_opts:call(?STORE, leases, [Store, synod_opts:keyword(Opts)]).

%% -- watches ------------------------------------------------------------------

%% @equiv watch(Store, Key, [])
-spec watch(store(), binary()) -> {ok, reference()} | {error, term()}.
watch(Store, Key) ->
    watch(Store, Key, []).

%% @doc Watches `Key' (or `prefix', `{range_end, End}') from revision
%% `{from, Revision}' (default: the next one). The caller receives
%% `{synod_watch, Ref, Events}', each event `{put | delete, Revision, KV,
%% PrevKV}' (`PrevKV' is `nil' when there was none), in revision order;
%% `{synod_watch, Ref, {error, {compacted, Revision}}}' ends the watch, and
%% `{'DOWN', Ref, ...}' means the process serving it went away.
-spec watch(store(), binary(), synod:options()) -> {ok, reference()} | {error, term()}.
watch(Store, Key, Opts) ->
    synod_opts:call(?STORE, watch, [Store, Key, synod_opts:keyword(Opts)]).

%% @doc Ends a watch; events already sent may still arrive.
-spec unwatch(store(), reference()) -> ok.
unwatch(Store, Ref) ->
    ?STORE:unwatch(Store, Ref).
