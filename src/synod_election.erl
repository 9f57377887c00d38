%% @doc Leader election among TTL candidates on a Synod store, from Erlang.
%%
%% Thin: every function converts its arguments and calls `Synod.Election'
%% (`'Elixir.Synod.Election''), which decides everything; see its
%% documentation and docs/coordination.md. A candidate claims the
%% election's seat with a lease of `ttl' ms, renews it, and claims again
%% whenever the seat empties. Its fencing token (the seat's create revision)
%% grows with every new leadership. Claim handlers, 1-argument funs or
%% `{M, F, A}' (called as `M:F(Claim, A...)'), run on every transition into
%% leadership with `#{election, candidate_id, token}', each in a process of
%% its own.
%%
%% ```
%% {ok, C} = synod_election:candidate(cfg, scheduler, <<"node-a">>,
%%                                    #{ttl => 3000, handlers => [{my_scheduler, lead, []}]}),
%% {ok, leader} = synod_election:start(C),
%% true = synod_election:is_leader(C),
%% {ok, <<"node-a">>} = synod_election:leader(cfg, scheduler),
%% ok = synod_election:stop(C).
%% '''
-module(synod_election).

-export([candidate/3, candidate/4, child_spec/1, handle/1, start/1, start/2, stop/1, stop/2,
         close/1]).
-export([is_leader/1, leader_until/1, leader/2, leader/3, get/2, get/3]).
-export([add_handlers/2, subscribe/1, subscribe/2, watch/2, watch/3, watch/4, unwatch/1]).

-export_type([candidate/0, election/0, handler/0]).

-define(ELECTION, 'Elixir.Synod.Election').

%% A candidate's handle: pass it to the other functions.
-type candidate() :: #{'__struct__' := 'Elixir.Synod.Election', atom() => term()}.
-type election() :: atom() | binary().
-type handler() :: fun((map()) -> term()) | {module(), atom(), [term()]}.

%% -- candidates ---------------------------------------------------------------

%% @equiv candidate(Store, Election, CandidateId, [])
-spec candidate(synod_store:store(), election(), binary()) -> {ok, candidate()} | {error, term()}.
candidate(Store, Election, CandidateId) ->
    candidate(Store, Election, CandidateId, []).

%% @doc Creates a candidate (a process linked to the caller), not yet
%% started. Options: `ttl' (ms), `handlers', `subscriber' (a pid),
%% `start' (`true' to start at once), `call_timeout', `root' (the seat's
%% key root).
-spec candidate(synod_store:store(), election(), binary(), synod:options()) ->
    {ok, candidate()} | {error, term()}.
candidate(Store, Election, CandidateId, Opts) ->
    synod_opts:call(?ELECTION, candidate, [Store, Election, CandidateId, synod_opts:keyword(Opts)]).

%% @doc A child spec for a supervised candidate, which campaigns at once
%% unless `{start, false}': options `store', `election', `id' and those of
%% `candidate/4', plus `name'. `handle/1' gives its handle.
-spec child_spec(synod:options()) -> supervisor:child_spec().
child_spec(Opts) ->
    synod_opts:call(?ELECTION, child_spec, [synod_opts:keyword(Opts)]).

%% @doc The handle of a candidate process (a pid or a registered name).
-spec handle(pid() | atom()) -> candidate().
handle(Server) ->
    ?ELECTION:handle(Server).

%% @equiv start(Candidate, [])
-spec start(candidate()) -> {ok, leader | follower} | {error, term()}.
start(Candidate) ->
    start(Candidate, []).

%% @doc Starts campaigning; returns after the first claim attempt.
-spec start(candidate(), synod:options()) -> {ok, leader | follower} | {error, term()}.
start(Candidate, Opts) ->
    synod_opts:call(?ELECTION, start, [Candidate, synod_opts:keyword(Opts)]).

%% @equiv stop(Candidate, 15000)
-spec stop(candidate()) -> ok.
stop(Candidate) ->
    stop(Candidate, 15000).

%% @doc Stops campaigning and releases the seat if held.
-spec stop(candidate(), timeout()) -> ok.
stop(Candidate, Timeout) ->
    ?ELECTION:stop(Candidate, Timeout).

%% @doc Stops the candidate and ends its process.
-spec close(candidate()) -> ok.
close(Candidate) ->
    ?ELECTION:close(Candidate).

%% -- leadership ---------------------------------------------------------------

%% @doc Whether the candidate leads, by its local deadline: false on time even
%% when the store or the candidate's process is stuck.
-spec is_leader(candidate()) -> boolean().
is_leader(Candidate) ->
    ?ELECTION:'leader?'(Candidate).

%% @doc The monotonic time (ms) the candidate's leadership lasts until, or
%% `undefined'.
-spec leader_until(candidate()) -> integer() | undefined.
leader_until(Candidate) ->
    synod_opts:undefined(?ELECTION:leader_until(Candidate)).

%% @equiv leader(Store, Election, [])
-spec leader(synod_store:store(), election()) -> {ok, binary() | undefined} | {error, term()}.
leader(Store, Election) ->
    leader(Store, Election, []).

%% @doc The candidate id that holds the election's seat, or `undefined'.
-spec leader(synod_store:store(), election(), synod:options()) ->
    {ok, binary() | undefined} | {error, term()}.
leader(Store, Election, Opts) ->
    found(synod_opts:call(?ELECTION, leader, [Store, Election, synod_opts:keyword(Opts)])).

%% @equiv get(Store, Election, [])
-spec get(synod_store:store(), election()) -> {ok, map() | undefined} | {error, term()}.
get(Store, Election) ->
    get(Store, Election, []).

%% @doc The stored election record, `#{name, leader_id, created_at,
%% revision}', or `undefined' while nobody leads.
-spec get(synod_store:store(), election(), synod:options()) ->
    {ok, map() | undefined} | {error, term()}.
get(Store, Election, Opts) ->
    found(synod_opts:call(?ELECTION, get, [Store, Election, synod_opts:keyword(Opts)])).

%% -- notifications ------------------------------------------------------------

%% @doc Adds claim handlers; they run from the next transition into
%% leadership on.
-spec add_handlers(candidate(), [handler()]) -> ok.
add_handlers(Candidate, Handlers) ->
    synod_opts:call(?ELECTION, add_handlers, [Candidate, Handlers]).

%% @equiv subscribe(Candidate, self())
-spec subscribe(candidate()) -> ok.
subscribe(Candidate) ->
    subscribe(Candidate, self()).

%% @doc `Pid' receives `{synod_election, Election, CandidateId, Event}':
%% `{elected, Token}', `{deposed, Token, Reason}', `{error, Reason}'.
-spec subscribe(candidate(), pid()) -> ok.
subscribe(Candidate, Pid) ->
    synod_opts:call(?ELECTION, subscribe, [Candidate, Pid]).

%% @equiv watch(Store, Election, self(), [])
-spec watch(synod_store:store(), election()) -> {ok, pid()} | {error, term()}.
watch(Store, Election) ->
    watch(Store, Election, self(), []).

%% @equiv watch(Store, Election, Target, [])
-spec watch(synod_store:store(), election(), pid()) -> {ok, pid()} | {error, term()}.
watch(Store, Election, Target) ->
    watch(Store, Election, Target, []).

%% @doc `Target' receives `{synod_election_leader, Election, Before, After}'
%% on every leader change (`Before' is `nil' in the first message); the
%% watcher's pid goes to `unwatch/1'.
-spec watch(synod_store:store(), election(), pid(), synod:options()) ->
    {ok, pid()} | {error, term()}.
watch(Store, Election, Target, Opts) ->
    synod_opts:call(?ELECTION, watch, [Store, Election, Target, synod_opts:keyword(Opts)]).

%% @doc Ends a watch.
-spec unwatch(pid()) -> ok.
unwatch(Watcher) ->
    ?ELECTION:unwatch(Watcher).

found({ok, Value}) -> {ok, synod_opts:undefined(Value)};
found(Error) -> Error.
