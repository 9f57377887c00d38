defmodule Synod.Test.Tmpfs do
  @moduledoc false
  # A real small disk for full-disk tests: a tmpfs of a given size mounted
  # on a directory. Mounting needs root (or CAP_SYS_ADMIN); `probe/0`
  # answers `:ok` or the reason a test should be skipped with, so a test
  # without the right never passes silently.

  @doc "`:ok` when a tmpfs can be mounted here, else the reason why not."
  @spec probe() :: :ok | String.t()
  def probe do
    dir = Path.join(System.tmp_dir!(), "synod_mount_probe_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)

    try do
      case System.cmd("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir],
             stderr_to_stdout: true
           ) do
        {_, 0} ->
          unmount(dir)
          :ok

        {out, code} ->
          "cannot mount a tmpfs here (mount exited #{code}: #{String.trim(out)})"
      end
    rescue
      e -> "cannot mount a tmpfs here (#{Exception.message(e)})"
    after
      File.rm_rf(dir)
    end
  end

  @doc "Mounts a tmpfs of `mb` MiB on `dir` (created first); raises if it cannot."
  @spec mount!(Path.t(), pos_integer()) :: :ok
  def mount!(dir, mb) do
    File.mkdir_p!(dir)
    {_, 0} = System.cmd("mount", ["-t", "tmpfs", "-o", "size=#{mb}m", "tmpfs", dir])
    :ok
  end

  @doc "Lazily unmounts `dir`; a directory not mounted is left as it is."
  @spec unmount(Path.t()) :: :ok
  def unmount(dir) do
    _ = System.cmd("umount", ["-l", dir], stderr_to_stdout: true)
    :ok
  end
end
