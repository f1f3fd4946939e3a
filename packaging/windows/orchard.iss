; Inno Setup 6 script: the Windows installer over the PyInstaller one-folder build.
; Built by packaging\windows\build.ps1, which passes the defines below; by hand:
;   ISCC.exe /DAppVersion=0.1.0 /DSourceDir=..\..\build\packaging\windows\dist\orchard ^
;            /DOutputDir=..\..\dist /DIconFile=..\..\build\packaging\windows\orchard.ico orchard.iss
; NOT built or tested on the Linux machine this was written on (no Windows there).

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\build\packaging\windows\dist\orchard"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif
#ifndef IconFile
  #define IconFile "..\..\build\packaging\windows\orchard.ico"
#endif

[Setup]
AppId={{6F1C2B9E-3D0A-4C55-9E51-0A7D2C4B8F31}
AppName=Orchard
AppVersion={#AppVersion}
AppVerName=Orchard {#AppVersion}
AppPublisher=Orchard developers
DefaultDirName={autopf}\Orchard
DefaultGroupName=Orchard
DisableProgramGroupPage=yes
; Per-user install by default (no administrator needed); the dialog offers all users.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir={#OutputDir}
OutputBaseFilename=orchard-{#AppVersion}-windows-x86_64-setup
SetupIconFile={#IconFile}
UninstallDisplayIcon={app}\orchard-gui.exe
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
ChangesEnvironment=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add the orchard command to PATH"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Orchard"; Filename: "{app}\orchard-gui.exe"
Name: "{group}\Orchard doctor"; Filename: "{cmd}"; Parameters: "/k ""{app}\orchard.exe"" doctor"
Name: "{group}\{cm:UninstallProgram,Orchard}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Orchard"; Filename: "{app}\orchard-gui.exe"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; \
  ValueData: "{olddata};{app}"; Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\orchard-gui.exe"; Description: "{cm:LaunchProgram,Orchard}"; Flags: nowait postinstall skipifsilent

; The GPU runtime (PyTorch, diffusers; several GB) lives in the user's data directory, not
; in {app}: uninstalling keeps it. Delete it with the app's data, or run
; `orchard runtime status` to see where it is.

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Path: string;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';') = 0;
end;
