defmodule Synod.Observer.Handler do
  @moduledoc false
  # The httpd module (`modules:` of Synod.Observer's httpd): routes GET and
  # HEAD of /, /metrics and /status.json, after the bearer token check.
  # Read-only. Runs in httpd's request process, so a slow status only holds
  # that request (and Synod.status/1 is bounded anyway).

  require Record

  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  alias Synod.Observer.{JSON, Page}

  @doc false
  # `do` is a keyword in Elixir; httpd calls Module:do/1.
  def unquote(:do)(mod_data) do
    config = mod(mod_data, :config_db)
    headers = mod(mod_data, :parsed_header)
    method = mod(mod_data, :method)
    path = mod(mod_data, :request_uri) |> to_string() |> String.split("?") |> hd()

    {code, type, body, extra} =
      cond do
        not authorized?(:httpd_util.lookup(config, :synod_token), headers) ->
          {401, "text/plain", "401 unauthorized: a bearer token is required\n",
           [{~c"www-authenticate", ~c"Bearer realm=\"synod\""}]}

        method not in [~c"GET", ~c"HEAD"] ->
          {405, "text/plain", "405 method not allowed: this server only reads\n",
           [{~c"allow", ~c"GET, HEAD"}]}

        true ->
          route(path, :httpd_util.lookup(config, :synod_status_timeout, 1_000))
      end

    body = if method == ~c"HEAD", do: "", else: IO.iodata_to_binary(body)

    response =
      [
        code: code,
        content_type: to_charlist(type),
        content_length: Integer.to_charlist(byte_size(body)),
        cache_control: ~c"no-store"
      ] ++ extra

    {:proceed, [{:response, {:response, response, body}}]}
  end

  defp route("/metrics", _timeout),
    do: {200, "text/plain; version=0.0.4; charset=utf-8", Synod.Metrics.render(), []}

  defp route("/status.json", timeout),
    do: {200, "application/json", JSON.encode(Synod.Status.status(timeout: timeout)), []}

  defp route(path, timeout) when path in ["/", "/index.html"],
    do: {200, "text/html; charset=utf-8", Page.html(Synod.Status.status(timeout: timeout)), []}

  defp route(_path, _timeout), do: {404, "text/plain", "404 not found\n", []}

  defp authorized?(nil, _headers), do: true

  defp authorized?(token, headers) do
    case List.keyfind(headers, ~c"authorization", 0) do
      {_, value} ->
        case to_string(value) do
          "Bearer " <> given -> equal?(given, token)
          _ -> false
        end

      nil ->
        false
    end
  end

  # Constant time for tokens of the same length (the length may leak).
  defp equal?(a, b) when byte_size(a) == byte_size(b), do: diff(a, b, 0) == 0

  defp equal?(_a, _b), do: false

  defp diff(<<x, a::binary>>, <<y, b::binary>>, acc),
    do: diff(a, b, Bitwise.bor(acc, Bitwise.bxor(x, y)))

  defp diff(<<>>, <<>>, acc), do: acc
end
