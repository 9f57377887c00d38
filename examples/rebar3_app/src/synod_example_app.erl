%% @private
-module(synod_example_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    synod_example_sup:start_link().

stop(_State) ->
    ok.
