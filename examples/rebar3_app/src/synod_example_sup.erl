%% @doc The example's supervision tree: Synod's hub, and this node's member of
%% the settings store when `store_voters' names this node. Every node of the
%% cluster runs the same tree.
-module(synod_example_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

-spec start_link() -> {ok, pid()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Hub = synod:child_spec(#{name => synod_example:hub()}),
    {ok, Voters} = application:get_env(synod_example, store_voters),
    {ok, DataDir} = application:get_env(synod_example, data_dir),
    Store = [synod_store:child_spec(#{name => synod_example:store(), voters => Voters,
                                      data_dir => DataDir})
             || lists:member(node(), Voters)],
    {ok, {#{strategy => one_for_one}, [Hub | Store]}}.
