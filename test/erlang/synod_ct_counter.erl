%% A Raft machine written in Erlang (the callbacks of Synod.Raft.Machine), for
%% synod_SUITE: a counter per key.
-module(synod_ct_counter).

-export([init/1, apply/3, snapshot/1, restore/2, value/2]).

-spec init(term()) -> map().
init(_Arg) -> #{}.

-spec apply(map(), {incr, term(), integer()}, map()) -> {map(), integer()}.
apply(_Meta, {incr, Key, By}, State) ->
    New = maps:get(Key, State, 0) + By,
    {State#{Key => New}, New}.

-spec snapshot(map()) -> map().
snapshot(State) -> State.

-spec restore(map(), term()) -> map().
restore(Snapshot, _Arg) -> Snapshot.

%% A query: synod_raft:query(G, {synod_ct_counter, value, [Key]}).
-spec value(map(), term()) -> integer().
value(State, Key) -> maps:get(Key, State, 0).
