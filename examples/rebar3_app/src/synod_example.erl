%% @doc The example's API: one session process per user, placed on the
%% cluster by Synod's hub wherever the user's id hashes to, and settings kept
%% in Synod's replicated store.
-module(synod_example).

-export([hub/0, store/0, start_session/1, stop_session/1, visit/1, where/1]).
-export([put_setting/2, get_setting/1]).

%% @doc The hub's name.
-spec hub() -> atom().
hub() -> synod_example_hub.

%% @doc The store's name.
-spec store() -> atom().
store() -> synod_example_store.

%% @doc Starts the session of `User' on its owner node.
-spec start_session(binary()) -> {ok, pid()} | {error, term()}.
start_session(User) ->
    Spec = #{id => User, start => {synod_example_session, start_link, [User]}},
    case synod:start_child(hub(), Spec) of
        {ok, #{started := [{User, _Node, Pid}]}} -> {ok, Pid};
        {ok, _} -> {error, not_started};
        {error, #{errors := Errors}} -> {error, Errors};
        {error, Reason} -> {error, Reason}
    end.

%% @doc Stops the session of `User'.
-spec stop_session(binary()) -> ok | {error, term()}.
stop_session(User) ->
    case synod:stop_child(hub(), User) of
        {ok, _} -> ok;
        {error, Result} -> {error, Result}
    end.

%% @doc Counts a visit in `User''s session: the number of visits so far.
-spec visit(binary()) -> {ok, pos_integer()} | {error, no_session}.
visit(User) ->
    case synod:whereis(hub(), User) of
        undefined -> {error, no_session};
        Pid -> {ok, synod_example_session:visit(Pid)}
    end.

%% @doc The node that runs `User''s session, or `undefined'.
-spec where(binary()) -> node() | undefined.
where(User) ->
    case synod:whereis(hub(), User) of
        undefined -> undefined;
        Pid -> node(Pid)
    end.

%% @doc Stores a setting (replicated on the store's voters).
-spec put_setting(binary(), binary()) -> ok | {error, term()}.
put_setting(Name, Value) ->
    case synod_store:put(store(), <<"settings/", Name/binary>>, Value) of
        {ok, _Revision, _} -> ok;
        {error, Reason} -> {error, Reason}
    end.

%% @doc A setting, or `undefined'.
-spec get_setting(binary()) -> {ok, binary() | undefined} | {error, term()}.
get_setting(Name) ->
    case synod_store:get(store(), <<"settings/", Name/binary>>) of
        {ok, #{value := Value}} -> {ok, Value};
        {ok, undefined} -> {ok, undefined};
        {error, Reason} -> {error, Reason}
    end.
