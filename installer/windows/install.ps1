<#
.SYNOPSIS
  Install RECC for the current user and start its daemon at every logon.

.DESCRIPTION
  1. Makes a per-user virtual environment (default %LOCALAPPDATA%\recc\venv); no admin rights.
  2. Installs RECC into it from this source folder, with the pinned versions (constraints.txt).
  3. Runs `recc daemon install`, which writes the logon registration: the per-user Run key
     (HKCU\Software\Microsoft\Windows\CurrentVersion\Run, value "RECC daemon") starting the
     BASE interpreter's pythonw.exe with a small launcher in the venv. Not the venv's own
     pythonw.exe: that is a launcher process that does not pass the end-session message on,
     and the daemon needs it to delete its clusters at logout. A Run key has no run-time
     limit (a scheduled task would stop the daemon after 72 hours by default).
  4. Starts the daemon now.
  Remove everything with uninstall.ps1. See docs\install.md.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File installer\windows\install.ps1
#>
param(
    [string]$Source = (Resolve-Path (Join-Path $PSScriptRoot "..\..")).Path,
    [string]$Venv = (Join-Path $env:LOCALAPPDATA "recc\venv"),
    [string]$Python = "python"
)
$ErrorActionPreference = "Stop"

function Invoke-Checked([string]$What, [scriptblock]$Block) {
    & $Block
    if ($LASTEXITCODE -ne 0) { throw "$What failed (exit code $LASTEXITCODE)" }
}

$VenvPython = Join-Path $Venv "Scripts\python.exe"
if (-not (Test-Path $VenvPython)) {
    Write-Host "Creating the virtual environment $Venv"
    Invoke-Checked "python -m venv" { & $Python -m venv $Venv }
}
Write-Host "Installing RECC from $Source"
Invoke-Checked "pip install" {
    & $VenvPython -m pip install --quiet --constraint (Join-Path $Source "constraints.txt") $Source
}
# The same code as `recc daemon install` on Windows: one place writes the registration.
Invoke-Checked "recc daemon install" { & $VenvPython -m recc.cli daemon install }
Write-Host "Done. Check it with: & '$VenvPython' -m recc.cli doctor"
