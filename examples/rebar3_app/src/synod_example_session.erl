%% @doc A user's session: a gen_server that counts visits. Synod's hub starts
%% it on the node that owns the user's id.
-module(synod_example_session).
-behaviour(gen_server).

-export([start_link/1, visit/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-spec start_link(binary()) -> {ok, pid()}.
start_link(User) ->
    gen_server:start_link(?MODULE, User, []).

%% @doc Counts a visit; returns the visits so far.
-spec visit(pid()) -> pos_integer().
visit(Pid) ->
    gen_server:call(Pid, visit).

init(User) ->
    {ok, #{user => User, visits => 0}}.

handle_call(visit, _From, #{visits := N} = State) ->
    {reply, N + 1, State#{visits := N + 1}};
handle_call(_Unknown, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Unknown, State) ->
    {noreply, State}.

handle_info(_Unknown, State) ->
    {noreply, State}.
