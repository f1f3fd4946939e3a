# Build the Windows installer: PyInstaller one-folder bundle, then Inno Setup 6 over it.
#   powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1 [-Python .venv\Scripts\python.exe]
# Produces dist\orchard-<version>-windows-x86_64-setup.exe.
# Needs: Python 3.11+ with `pip install -e .[dev] pyinstaller==6.22.3 PySide6-Essentials`,
# and Inno Setup 6 (ISCC.exe; https://jrsoftware.org/isinfo.php, or `winget install
# JRSoftware.InnoSetup`).
# NOT run on the Linux machine this was written on (no Windows there): see docs/packaging.md.
param(
    [string]$Python = ".venv\Scripts\python.exe",
    [string]$Iscc = ""
)
$ErrorActionPreference = "Stop"
$Root = (Resolve-Path "$PSScriptRoot\..\..").Path
Set-Location $Root
$Version = (& $Python -c "import core; print(core.__version__)").Trim()
$Build = Join-Path $Root "build\packaging\windows"
$Dist = Join-Path $Root "dist"
if (Test-Path $Build) { Remove-Item -Recurse -Force $Build }
New-Item -ItemType Directory -Force "$Build\wheel", $Dist | Out-Null

Write-Host "== Orchard's wheel (the first run installs it into the runtime)"
& $Python -m pip wheel --quiet --no-deps --no-build-isolation -w "$Build\wheel" $Root
if ($LASTEXITCODE) { throw "pip wheel failed" }

Write-Host "== icons"
& $Python packaging\make_icon.py "$Build\orchard.png" 256 | Out-Null
& $Python packaging\make_icon.py "$Build\orchard.ico" 256 | Out-Null

Write-Host "== PyInstaller (one folder: orchard.exe for the console, orchard-gui.exe for the app)"
$env:ORCHARD_WHEEL_DIR = "$Build\wheel"
$env:ORCHARD_ICON = "$Build\orchard.png"
& $Python -m PyInstaller --noconfirm --clean --log-level WARN `
    --distpath "$Build\dist" --workpath "$Build\work" packaging\orchard.spec
if ($LASTEXITCODE) { throw "PyInstaller failed" }

Write-Host "== checking that the bundle holds no torch"
& $Python packaging\check_bundle.py "$Build\dist\orchard"
if ($LASTEXITCODE) { throw "the bundle holds torch" }
& "$Build\dist\orchard\orchard.exe" --version

Write-Host "== Inno Setup"
if (-not $Iscc) {
    $Iscc = @(
        "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe",
        "$env:ProgramFiles\Inno Setup 6\ISCC.exe",
        "$env:LOCALAPPDATA\Programs\Inno Setup 6\ISCC.exe"
    ) | Where-Object { Test-Path $_ } | Select-Object -First 1
}
if (-not $Iscc) { throw "Inno Setup 6 (ISCC.exe) not found: install it or pass -Iscc" }
& $Iscc "/DAppVersion=$Version" "/DSourceDir=$Build\dist\orchard" "/DOutputDir=$Dist" `
    "/DIconFile=$Build\orchard.ico" packaging\windows\orchard.iss
if ($LASTEXITCODE) { throw "ISCC failed" }
Get-Item "$Dist\orchard-$Version-windows-x86_64-setup.exe"
