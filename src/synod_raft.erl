%% @doc Raft groups from Erlang: a replicated state machine run by 3 or 5
%% voters, with durable logs, fast failover and leader watches.
%%
%% Thin: every function converts its arguments and calls `Synod.Raft'
%% (`'Elixir.Synod.Raft''), which decides everything; see its documentation
%% and docs/raft.md. Options are maps or proplists; bad arguments raise
%% `error({badarg, Message})'.
%%
%% A machine is a module with the callbacks of `Synod.Raft.Machine':
%% `init(Arg) -> State', `apply(Meta, Command, State) -> {State, Result}',
%% `snapshot(State) -> Term', `restore(Term, Arg) -> State'. Erlang modules
%% implement it as well as Elixir ones; `'Elixir.Synod.Raft.KV'' is a map.
%%
%% ```
%% Nodes = ['a@127.0.0.1', 'b@127.0.0.1', 'c@127.0.0.1'],
%% ok = synod_raft:start_group(config, Nodes, "/var/lib/myapp/raft",
%%                             #{machine => 'Elixir.Synod.Raft.KV'}),
%% {ok, nil} = synod_raft:command(config, {put, mode, fast}),
%% {ok, fast} = synod_raft:query(config, {my_queries, get, [mode]}),
%% Leader = synod_raft:leader(config).
%% '''
-module(synod_raft).

-export([child_spec/1, start_member/1, stop_member/1, start_group/3, start_group/4]).
-export([command/2, command/3, query/2, query/3]).
-export([add_member/2, add_member/3, remove_member/2, remove_member/3, transfer_leader/2,
         confirm_leader/1, confirm_leader/2, subscribe_applied/1, subscribe_applied/2,
         status/1, status/2, member_id/1]).
-export([leader/1, is_leader/1, term/1, add_leader_watch/3, add_leader_watch/4,
         remove_leader_watch/2]).
%% The fun query/3 builds from an MFA calls this on the leader's node.
-export([apply_query/2]).

-export_type([group/0, watch_event/0, watch_target/0, query/0]).

-define(RAFT, 'Elixir.Synod.Raft').

-type group() :: atom().
-type watch_event() :: become_leader | become_follower.
-type watch_target() :: fun((term(), watch_event(), map(), map()) -> term()) | pid().
%% A fun of the state, or `{Module, Function, Args}' called as
%% `Module:Function(State, Args...)'. Prefer the MFA: a fun defined in a
%% shell or script exists only on the node that made it, and a query runs on
%% the leader's node.
-type query() :: fun((term()) -> term()) | {module(), atom(), [term()]}.

%% -- members ------------------------------------------------------------------

%% @doc A child spec for this node's member of a group. Options: `name'
%% (required), `machine' (required: `Module' or `{Module, Arg}'), `data_dir'
%% (required), `voters' (the bootstrap voters, the same on each), `join',
%% `tick_ms', `election_tick', `heartbeat_tick', `fast_failover',
%% `failover_step_ms', `snapshot_every', `batch'.
-spec child_spec(synod:options()) -> supervisor:child_spec().
child_spec(Opts) ->
    synod_opts:call(?RAFT, child_spec, [synod_opts:member_keyword(Opts)]).

%% @doc Starts this node's member under Synod's own supervisor (options of
%% `child_spec/1').
-spec start_member(synod:options()) -> {ok, pid()} | {error, term()}.
start_member(Opts) ->
    synod_opts:call(?RAFT, start_member, [synod_opts:member_keyword(Opts)]).

%% @doc Stops this node's member of `Group'; its files stay.
-spec stop_member(group()) -> ok | {error, not_found}.
stop_member(Group) ->
    ?RAFT:stop_member(Group).

%% @equiv start_group(Group, Nodes, DataRoot, [])
-spec start_group(group(), [node()], file:filename_all()) -> ok | {error, term()}.
start_group(Group, Nodes, DataRoot) ->
    start_group(Group, Nodes, DataRoot, []).

%% @doc Starts a member on every node of `Nodes' (the voters), each with its
%% data in `DataRoot/<node>'. Options as `child_spec/1' (`machine' at least).
-spec start_group(group(), [node()], file:filename_all(), synod:options()) ->
    ok | {error, term()}.
start_group(Group, Nodes, DataRoot, Opts) ->
    synod_opts:call(?RAFT, start_group, [Group, Nodes, DataRoot, synod_opts:keyword(Opts)]).

%% -- commands and queries -----------------------------------------------------

%% @equiv command(Group, Command, [])
-spec command(group(), term()) -> {ok, term()} | {error, term()}.
command(Group, Command) ->
    command(Group, Command, []).

%% @doc Proposes `Command'; once it is committed and applied, returns
%% `{ok, Result}' with the machine's result. `{error, timeout}' means the
%% outcome is unknown. Options: `timeout' (ms, default 5000), `local'.
-spec command(group(), term(), synod:options()) -> {ok, term()} | {error, term()}.
command(Group, Command, Opts) ->
    synod_opts:call(?RAFT, command, [Group, Command, synod_opts:keyword(Opts)]).

%% @equiv query(Group, Query, [])
-spec query(group(), query()) -> {ok, term()} | {error, term()}.
query(Group, Query) ->
    query(Group, Query, []).

%% @doc Runs `Query' on the machine's state: on the leader after a read-index
%% round (`{consistency, linearizable}', the default), or at once on this
%% node's member (`{consistency, stale}'). Options: `consistency', `timeout'.
-spec query(group(), query(), synod:options()) -> {ok, term()} | {error, term()}.
query(Group, {M, F, []}, Opts) when is_atom(M), is_atom(F) ->
    query(Group, fun M:F/1, Opts);
query(Group, {M, F, A}, Opts) when is_atom(M), is_atom(F), is_list(A) ->
    query(Group, fun(State) -> ?MODULE:apply_query(State, {M, F, A}) end, Opts);
query(Group, Query, Opts) ->
    synod_opts:call(?RAFT, query, [Group, Query, synod_opts:keyword(Opts)]).

%% @private
-spec apply_query(term(), {module(), atom(), [term()]}) -> term().
apply_query(State, {M, F, A}) ->
    apply(M, F, [State | A]).

%% -- membership and leadership ------------------------------------------------

%% @equiv add_member(Group, Node, [])
-spec add_member(group(), node()) -> ok | {error, term()}.
add_member(Group, Node) ->
    add_member(Group, Node, []).

%% @doc Adds `Node' (which runs a member started with `{join, true}') as a
%% learner, then promotes it to voter once it has caught up. Option:
%% `timeout'.
-spec add_member(group(), node(), synod:options()) -> ok | {error, term()}.
add_member(Group, Node, Opts) ->
    synod_opts:call(?RAFT, add_member, [Group, Node, synod_opts:keyword(Opts)]).

%% @equiv remove_member(Group, Node, [])
-spec remove_member(group(), node()) -> ok | {error, term()}.
remove_member(Group, Node) ->
    remove_member(Group, Node, []).

%% @doc Removes `Node' from the group's members. Option: `timeout'.
-spec remove_member(group(), node(), synod:options()) -> ok | {error, term()}.
remove_member(Group, Node, Opts) ->
    synod_opts:call(?RAFT, remove_member, [Group, Node, synod_opts:keyword(Opts)]).

%% @doc Asks the leader to hand leadership to `Node', a caught-up voter.
-spec transfer_leader(group(), node()) -> ok | {error, term()}.
transfer_leader(Group, Node) ->
    ?RAFT:transfer_leader(Group, Node).

%% @equiv confirm_leader(Group, 5000)
-spec confirm_leader(group()) -> ok | {error, term()}.
confirm_leader(Group) ->
    confirm_leader(Group, 5000).

%% @doc `ok' only once a quorum acknowledged, after the call, that this
%% node's member leads.
-spec confirm_leader(group(), timeout()) -> ok | {error, term()}.
confirm_leader(Group, Timeout) ->
    ?RAFT:confirm_leader(Group, Timeout).

%% @equiv subscribe_applied(Group, self())
-spec subscribe_applied(group()) -> ok | {error, no_member}.
subscribe_applied(Group) ->
    subscribe_applied(Group, self()).

%% @doc `Pid' receives `{synod_raft_applied, Group, Index}' now and whenever
%% this node's member has applied more entries, until `Pid' exits.
-spec subscribe_applied(group(), pid()) -> ok | {error, no_member}.
subscribe_applied(Group, Pid) ->
    ?RAFT:subscribe_applied(Group, Pid).

%% @equiv status(Group, node())
-spec status(group()) -> map().
status(Group) ->
    status(Group, node()).

%% @doc The status of `Node''s member: term, role, leader, indexes, members.
-spec status(group(), node()) -> map().
status(Group, Node) ->
    ?RAFT:status(Group, Node).

%% @doc The id of the member a node runs (62 bits of the MD5 of its name).
-spec member_id(node()) -> pos_integer().
member_id(Node) ->
    ?RAFT:member_id(Node).

%% -- leader information and watches -------------------------------------------

%% @doc The group's leader as this node's member knows it, or `undefined'.
-spec leader(group()) -> node() | undefined.
leader(Group) ->
    synod_opts:undefined(?RAFT:leader(Group)).

%% @doc Whether this node's member leads the group.
-spec is_leader(group()) -> boolean().
is_leader(Group) ->
    ?RAFT:'leader?'(Group).

%% @doc The latest term this node's member knows (0 without a member).
-spec term(group()) -> non_neg_integer().
term(Group) ->
    ?RAFT:term(Group).

%% @equiv add_leader_watch(Group, Key, Target, all)
-spec add_leader_watch(group(), term(), watch_target()) -> ok | {error, no_member}.
add_leader_watch(Group, Key, Target) ->
    add_leader_watch(Group, Key, Target, all).

%% @doc Watches this node's member for leadership changes; see
%% `synod:add_leader_watch/4'. Delivery is asynchronous and in order; a fun
%% that crashes is logged and its watch stays.
-spec add_leader_watch(group(), term(), watch_target(), all | watch_event()) ->
    ok | {error, no_member}.
add_leader_watch(Group, Key, Target, EventType) ->
    ?RAFT:add_leader_watch(Group, Key, Target, EventType).

%% @doc Removes the watch under `Key' (no error if there is none).
-spec remove_leader_watch(group(), term()) -> ok | {error, no_member}.
remove_leader_watch(Group, Key) ->
    ?RAFT:remove_leader_watch(Group, Key).
