<#
.SYNOPSIS
  Remove RECC's logon registration, stop its daemon and delete the per-user virtual environment.

.DESCRIPTION
  Stopping the daemon deletes its ad hoc clusters first (as at logout). The Run key value
  "RECC daemon" and the launcher in the venv are removed by `recc daemon uninstall`; if the
  venv is already gone the Run key value is removed here directly. RECC's state and logs in
  %LOCALAPPDATA%\recc stay (cost history); pass -RemoveData to delete them too. Credentials
  in Windows Credential Manager are removed by `recc logout` (run first if you want that).
#>
param(
    [string]$Venv = (Join-Path $env:LOCALAPPDATA "recc\venv"),
    [switch]$KeepVenv,
    [switch]$RemoveData
)
$ErrorActionPreference = "Stop"
$VenvPython = Join-Path $Venv "Scripts\python.exe"
$RunKey = "HKCU:\Software\Microsoft\Windows\CurrentVersion\Run"

if (Test-Path $VenvPython) {
    & $VenvPython -m recc.cli daemon stop
    & $VenvPython -m recc.cli daemon uninstall
    if ($LASTEXITCODE -ne 0) { throw "recc daemon uninstall failed (exit code $LASTEXITCODE)" }
}
Remove-ItemProperty -Path $RunKey -Name "RECC daemon" -ErrorAction SilentlyContinue
if (-not $KeepVenv -and (Test-Path $Venv)) {
    Write-Host "Removing $Venv"
    Remove-Item -Recurse -Force $Venv
}
if ($RemoveData) {
    Remove-Item -Recurse -Force (Join-Path $env:LOCALAPPDATA "recc") -ErrorAction SilentlyContinue
}
Write-Host "RECC's autostart is removed."
